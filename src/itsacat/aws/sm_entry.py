"""The SageMaker training entry point: the train stage's own code, under SageMaker's contract.

    python train_itsacat.py                        what a SageMaker training job runs
    python -m itsacat.aws.sm_entry --root DIR      the same against an /opt/ml-shaped DIR

The contract (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-training-algo.html):

    ROOT/input/config/hyperparameters.json   hyperparameters, every value a string
                                             (else SM_HPS, else SM_HP_* environment variables)
    ROOT/input/data/prepared/                the `prepared` channel (else SM_CHANNEL_PREPARED)
    ROOT/model/                              what becomes model.tar.gz (else SM_MODEL_DIR)
    ROOT/output/failure                      why the job failed, when it did; exit status != 0

ROOT is /opt/ml, or `--root`, or SM_ROOT. Hyperparameters are `section.key` strings that
`itsacat.config.params_from_hyperparameters` turns into the same validated `Params` the
local run reads from params.yaml; the model directory receives model/, insight/ and
dvclive/, exactly the outputs the local train stage writes. Final metrics are logged as
`itsacat-metric NAME=VALUE` lines, which a tuning job's metric definitions read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from itsacat.errors import ConfigError, ItsacatError

log = logging.getLogger("itsacat.aws.sm_entry")

CHANNEL = "prepared"
CHECKPOINT_DIR = "/opt/ml/checkpoints"  # CheckpointConfig.LocalPath: SageMaker syncs it to S3
METRIC_LINE = "itsacat-metric {name}={value}"
METRIC_REGEX = r"itsacat-metric {name}=([-+0-9.eE]+|nan|inf)"
FAILURE_LIMIT = 1024  # SageMaker shows at most this much of the failure reason


@dataclass(frozen=True)
class Layout:
    """Where SageMaker puts the inputs and expects the outputs."""

    root: Path
    hyperparameters: Path
    channel: Path
    model: Path
    failure: Path
    checkpoints: Path  # the train stage's checkpoint (SageMaker keeps it for a spot restart)

    @classmethod
    def from_env(cls, root: Path, environ: Mapping[str, str]) -> Layout:
        return cls(
            root=root,
            hyperparameters=root / "input" / "config" / "hyperparameters.json",
            channel=Path(
                environ.get(f"SM_CHANNEL_{CHANNEL.upper()}", root / "input" / "data" / CHANNEL)
            ),
            model=Path(environ.get("SM_MODEL_DIR", root / "model")),
            failure=root / "output" / "failure",
            checkpoints=root / "checkpoints",
        )


def read_hyperparameters(layout: Layout, environ: Mapping[str, str]) -> dict[str, str]:
    """The job's hyperparameters as strings, SageMaker's own `sagemaker_*` keys left out."""
    raw: Any
    if layout.hyperparameters.exists():
        try:
            raw = json.loads(layout.hyperparameters.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{layout.hyperparameters} is not valid JSON: {exc}") from None
    elif "SM_HPS" in environ:
        try:
            raw = json.loads(environ["SM_HPS"])
        except json.JSONDecodeError as exc:
            raise ConfigError(f"SM_HPS is not valid JSON: {exc}") from None
    else:
        raw = {k[len("SM_HP_") :].lower(): v for k, v in environ.items() if k.startswith("SM_HP_")}
    if not isinstance(raw, dict):
        raise ConfigError(f"hyperparameters must be a JSON object, got {type(raw).__name__}")
    return {
        str(k): v if isinstance(v, str) else json.dumps(v)
        for k, v in raw.items()
        if not str(k).startswith("sagemaker_")
    }


def flat_metrics(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """dvclive's nested metrics.json → {"train/loss": 0.1, "step": 2500.0, …}."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_metrics(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def run(layout: Layout, hyperparameters: Mapping[str, str]) -> dict[str, float]:
    """Train as the hyperparameters say; write model/, insight/, dvclive/ under layout.model."""
    from itsacat.config import params_from_hyperparameters
    from itsacat.stages.train import Paths, train

    params = params_from_hyperparameters(hyperparameters)
    # Inside the job the work is local by definition; a job must never start another job.
    params = replace(params, train=replace(params.train, compute="local"))
    if not (layout.channel / "train.npz").exists():
        raise ConfigError(
            f"the {CHANNEL!r} channel ({layout.channel}) has no train.npz; give the job an "
            f"input channel named {CHANNEL!r} holding the prepare stage's output"
        )
    paths = Paths(
        prepared=layout.channel,
        model=layout.model / "model",
        insight=layout.model / "insight",
        live=layout.model / "dvclive",
        checkpoint=layout.checkpoints / "train.npz",
    )
    train(params, paths, log_live=True)
    metrics = flat_metrics(json.loads((paths.live / "metrics.json").read_text()))
    for name, value in sorted(metrics.items()):
        log.info(METRIC_LINE.format(name=name, value=f"{value:.6g}"))
    return metrics


def _fail(layout: Layout, reason: str) -> None:
    layout.failure.parent.mkdir(parents=True, exist_ok=True)
    layout.failure.write_text(reason[:FAILURE_LIMIT])
    log.error("training failed: %s", reason)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(description="itsacat SageMaker training entry point")
    parser.add_argument("--root", default=env.get("SM_ROOT", "/opt/ml"))
    # SageMaker also passes every hyperparameter as `--name value`; the JSON file wins.
    args, _ = parser.parse_known_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    layout = Layout.from_env(Path(args.root), env)
    try:
        hyperparameters = read_hyperparameters(layout, env)
        run(layout, hyperparameters)
    except ItsacatError as exc:
        _fail(layout, f"{type(exc).__name__}: {exc}")
        return 1
    except KeyboardInterrupt:  # SIGTERM: a spot reclaim or a stop; the state is saved
        log.warning(
            "stopped by a signal; the training state is in %s, where a restarted spot "
            "job resumes from it",
            layout.checkpoints,
        )
        return 130
    except Exception as exc:  # the outermost layer: whatever it was, SageMaker must hear why
        tail = "".join(traceback.format_exception(exc)[-3:])
        _fail(layout, f"unexpected {type(exc).__name__}: {exc}\n{tail}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
