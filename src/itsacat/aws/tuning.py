"""`itsacat tune`: search the ranges in params.yaml `tune:`, then print the ranked table.

    itsacat tune                                  tune.backend decides where
    itsacat tune --backend local --set train.epochs=200
    itsacat tune --backend sagemaker

local: each point becomes a queued DVC experiment (`dvc exp run --queue -S key=value …`),
then `dvc exp run --run-all -j tune.parallel` runs the whole pipeline for each, and the
metrics the train stage logged (dvclive) rank them (never evaluate's test metrics).
Every run stays an experiment: `dvc exp apply NAME` takes the best one into the workspace.

sagemaker: one hyperparameter tuning job whose training jobs run the same entry point as
`train.compute: sagemaker`; the objective is read from the `itsacat-metric NAME=VALUE`
lines the entry point logs. Grid searches send the same points as the local grid.

The objective is a train or validation metric, never a test one: choosing on the test set
would make its score optimistic.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import re
import secrets
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from itsacat.config import (
    _SECTION_TYPES,
    Params,
    TuneParams,
    TuneRange,
    load_params,
)
from itsacat.errors import ConfigError, ItsacatError

log = logging.getLogger(__name__)

LIVE_METRICS = "dvclive/metrics.json"  # what the train stage logs, locally and on SageMaker
SHOWN_METRICS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy")
TUNING_PREFIX_LIMIT = 9  # of a tuning job name's 32 characters


@dataclass(frozen=True)
class Row:
    """One tried point: its name, values, objective and other metrics."""

    name: str
    values: dict[str, str]
    objective: float | None
    metrics: dict[str, float]
    status: str = "done"


def field_type(key: str) -> Any:
    section, _, name = key.partition(".")
    return typing.get_type_hints(_SECTION_TYPES[section])[name]


def _fmt(value: float, kind: Any) -> str:
    return str(round(value)) if kind is int else f"{value:.6g}"


def grid_values(key: str, rng: TuneRange, steps: int) -> list[str]:
    """The values a grid tries for one range: its `values`, or `steps` evenly spaced points."""
    import numpy as np

    if rng.values:
        return list(rng.values)
    assert rng.low is not None and rng.high is not None  # checked by TuneRange.check
    if rng.scale == "log":
        points = np.geomspace(rng.low, rng.high, steps)
    else:
        points = np.linspace(rng.low, rng.high, steps)
    kind = field_type(key)
    return list(dict.fromkeys(_fmt(float(p), kind) for p in points))


def random_value(key: str, rng: TuneRange, gen: Any) -> str:
    """One random value of a range; `gen` is a numpy Generator."""
    if rng.values:
        return rng.values[int(gen.integers(len(rng.values)))]
    assert rng.low is not None and rng.high is not None
    kind = field_type(key)
    if rng.scale == "log":
        value = math.exp(gen.uniform(math.log(rng.low), math.log(rng.high)))
    else:
        value = gen.uniform(rng.low, rng.high)
    return _fmt(value, kind)


def points(tune: TuneParams) -> list[dict[str, str]]:
    """The points to try, each {section.key: value text}: the grid, or max_points at random."""
    if not tune.ranges:
        raise ConfigError(
            "tune.ranges is empty; declare what to search in params.yaml, e.g. "
            "tune: {ranges: {train.learning_rate: {low: 0.001, high: 0.03, scale: log}}}"
        )
    keys = sorted(tune.ranges)
    if tune.strategy == "grid":
        axes = [grid_values(k, tune.ranges[k], tune.grid_steps) for k in keys]
        n = math.prod(len(a) for a in axes)
        if n > tune.max_points:
            raise ConfigError(
                f"the grid has {n} points, more than tune.max_points ({tune.max_points}); "
                "lower tune.grid_steps, drop a range, or raise tune.max_points (params.yaml)"
            )
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]
    import numpy as np

    gen = np.random.default_rng(tune.seed)
    out: list[dict[str, str]] = []
    for _ in range(tune.max_points):
        point = {k: random_value(k, tune.ranges[k], gen) for k in keys}
        if point not in out:
            out.append(point)
    return out


def rank(rows: Sequence[Row], goal: str) -> list[Row]:
    """Best first; points without an objective (failed) last."""
    sign = -1.0 if goal == "maximize" else 1.0
    return sorted(rows, key=lambda r: (r.objective is None, sign * (r.objective or 0.0)))


def markdown(rows: Sequence[Row], objective: str, goal: str) -> str:
    """The ranked table, as `dvc exp show --md` draws one."""
    keys = sorted({k for r in rows for k in r.values})
    extra = [m for m in SHOWN_METRICS if m != objective and any(m in r.metrics for r in rows)]
    header = ["rank", "experiment", *keys, f"{objective} ({goal})", *extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for i, r in enumerate(rank(rows, goal), 1):
        obj = f"{r.objective:.4g}" if r.objective is not None else r.status
        cells = [str(i), r.name, *(r.values.get(k, "") for k in keys), obj]
        cells += [f"{r.metrics[m]:.4g}" if m in r.metrics else "" for m in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_objective(
    params: Params, sets: Mapping[str, str], pts: Sequence[Mapping[str, str]]
) -> None:
    """A val/* objective needs a validation split in every point."""
    if not params.tune.objective.startswith("val/"):
        return
    for point in pts:
        text = {**sets, **point}.get("prepare.val_fraction")
        fraction = float(text) if text is not None else params.prepare.val_fraction
        if fraction <= 0:
            raise ConfigError(
                f"tune.objective {params.tune.objective} is a validation metric but "
                "prepare.val_fraction is 0; set it > 0 (e.g. 0.2) in params.yaml or pass "
                "--set prepare.val_fraction=0.2"
            )


# ---------------------------------------------------------------- local: a DVC queue


def flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


def experiments_from_show(show: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """`dvc exp show --json` → {experiment name: the train stage's metrics, flattened}."""
    found: dict[str, dict[str, float]] = {}
    for baseline in show:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                live = (data.get("metrics") or {}).get(LIVE_METRICS, {}).get("data")
                if rev.get("name") and isinstance(live, Mapping):
                    found[str(rev["name"])] = flat(live)
    return found


def _dvc(args: Sequence[str], root: Path, what: str) -> str:
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.exists() else "dvc", *args]
    log.debug("$ %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    except OSError as exc:
        raise ItsacatError(f"cannot run dvc ({exc}); install it with `pip install dvc`") from None
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ItsacatError(f"{what} failed: {' / '.join(tail)} (`{' '.join(cmd[1:])}` in {root})")
    return done.stdout


def tune_local(
    params: Params, root: Path, sets: Mapping[str, str], run: Callable[..., str] = _dvc
) -> list[Row]:
    """Queue one DVC experiment per point, run them all, read back their metrics."""
    tune = params.tune
    pts = points(tune)
    check_objective(params, sets, pts)
    stamp = time.strftime("%m%d-%H%M%S")
    names: list[tuple[str, dict[str, str]]] = []
    for i, point in enumerate(pts):
        name = f"tune-{stamp}-{i}"
        flags = [a for k, v in {**sets, **point}.items() for a in ("-S", f"{k}={v}")]
        run(
            ["exp", "run", "--queue", "--name", name, *flags],
            root,
            f"queueing experiment {name}",
        )
        names.append((name, point))
    log.info("queued %d experiments; running %d at a time", len(names), tune.parallel)
    try:
        run(["exp", "run", "--run-all", "-j", str(tune.parallel)], root, "running the queue")
    except ItsacatError as exc:
        log.warning("%s; ranking the experiments that finished", exc)
    found = experiments_from_show(json.loads(run(["exp", "show", "--json"], root, "dvc exp show")))
    rows = []
    for name, point in names:
        metrics = found.get(name)
        if metrics is None:
            rows.append(Row(name, point, None, {}, status="failed"))
            continue
        rows.append(Row(name, point, metrics.get(tune.objective), metrics))
    if all(r.objective is None for r in rows):
        raise ItsacatError(
            f"no experiment reported {tune.objective}; see `dvc queue status` and "
            f"`dvc queue logs NAME`"
        )
    return rows


# ----------------------------------------------------------- sagemaker: a tuning job


def parameter_ranges(tune: TuneParams) -> dict[str, list[dict[str, Any]]]:
    """SageMaker ParameterRanges; a grid sends every range as its grid's categorical values."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for key in sorted(tune.ranges):
        rng = tune.ranges[key]
        if tune.strategy == "grid" or rng.values:
            values = grid_values(key, rng, tune.grid_steps)
            ranges["CategoricalParameterRanges"].append({"Name": key, "Values": values})
            continue
        kind = field_type(key)
        scaling = "Logarithmic" if rng.scale == "log" else "Linear"
        entry = {"Name": key, "MinValue": _fmt(rng.low or 0.0, kind)}
        entry |= {"MaxValue": _fmt(rng.high or 0.0, kind), "ScalingType": scaling}
        group = "IntegerParameterRanges" if kind is int else "ContinuousParameterRanges"
        ranges[group].append(entry)
    return {k: v for k, v in ranges.items() if v}


def tuning_request(params: Params, name: str, where: Any) -> dict[str, Any]:
    """The CreateHyperParameterTuningJob request (pure)."""
    from itsacat.aws.sm_entry import METRIC_REGEX
    from itsacat.aws.training import hyperparameters, job_request

    tune = params.tune
    static = {k: v for k, v in hyperparameters(params).items() if k not in tune.ranges}
    job = job_request(params, name, where, static=static)
    metrics = sorted({tune.objective, *SHOWN_METRICS})
    n_jobs = len(points(tune)) if tune.strategy == "grid" else tune.max_points
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Grid" if tune.strategy == "grid" else "Random",
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize" if tune.goal == "maximize" else "Minimize",
                "MetricName": tune.objective,
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": n_jobs,
                "MaxParallelTrainingJobs": tune.parallel,
            },
            "ParameterRanges": parameter_ranges(tune),
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "TrainingImage": job["AlgorithmSpecification"]["TrainingImage"],
                "TrainingInputMode": "File",
                "MetricDefinitions": [
                    {"Name": m, "Regex": METRIC_REGEX.format(name=re.escape(m))} for m in metrics
                ],
            },
            "RoleArn": job["RoleArn"],
            "StaticHyperParameters": job["HyperParameters"],
            "InputDataConfig": job["InputDataConfig"],
            "OutputDataConfig": job["OutputDataConfig"],
            "ResourceConfig": job["ResourceConfig"],
            "StoppingCondition": job["StoppingCondition"],
        },
        "Tags": job["Tags"],
    }


def tuning_job_name(prefix: str) -> str:
    """A unique tuning job name, PREFIX-mmddHHMMSS-xxxx: tuning job names have at most 32
    characters (and its training jobs append -NNN-xxxxxxxx)."""
    from itsacat.aws.training import name_prefix

    stamp = time.strftime("%m%d%H%M%S", time.gmtime())
    return f"{name_prefix(prefix, TUNING_PREFIX_LIMIT)}-{stamp}-{secrets.token_hex(2)}"


def tune_sagemaker(
    params: Params,
    *,
    s3: Any = None,
    sagemaker: Any = None,
    sns: Any = None,
    prepared: Path = Path("prepared"),
    root: Path = Path(),
    sleep: Callable[[float], None] = time.sleep,
) -> list[Row]:
    """Run a SageMaker hyperparameter tuning job over tune.ranges; → its training jobs."""
    from itsacat.aws.bootstrap import resolve_bucket
    from itsacat.aws.clients import aws_errors, client
    from itsacat.aws.notify import notify
    from itsacat.aws.training import (
        JobLocations,
        check_ready,
        one_line,
        start_job,
        wait_for_job,
    )
    from itsacat.errors import AWSError

    region = params.aws.region
    check_objective(params, {}, points(params.tune))
    bucket = resolve_bucket(params.aws, root)
    s3 = s3 if s3 is not None else client("s3", region)
    sagemaker = sagemaker if sagemaker is not None else client("sagemaker", region)
    check_ready(params, s3, sagemaker, bucket, prepared)
    name = tuning_job_name(params.aws.prefix)
    where = JobLocations(bucket, f"{params.aws.prefix}/tuning/{name}")
    start_job(
        s3,
        where,
        prepared,
        params,
        f"tuning job {name}",
        lambda: sagemaker.create_hyper_parameter_tuning_job(**tuning_request(params, name, where)),
    )
    log.info("started SageMaker tuning job %s", name)

    def progress(desc: dict[str, Any]) -> None:
        c = desc.get("TrainingJobStatusCounters", {})
        log.info(
            "tuning job %s: %s, training jobs: %s completed, %s in progress, %s failed",
            name,
            desc["HyperParameterTuningJobStatus"],
            c.get("Completed", 0),
            c.get("InProgress", 0),
            c.get("NonRetryableError", 0) + c.get("RetryableError", 0),
        )

    desc = wait_for_job(
        sagemaker, name, params.aws.poll_s, kind="tuning", on_status=progress, sleep=sleep
    )
    if desc["HyperParameterTuningJobStatus"] != "Completed":
        raise AWSError(
            f"SageMaker tuning job {name} ended {desc['HyperParameterTuningJobStatus']}: "
            f"{one_line(desc.get('FailureReason')) or 'no reason given'}; see its training "
            "jobs' logs in CloudWatch (/aws/sagemaker/TrainingJobs) and run `itsacat tune` again"
        )
    rows = []
    with aws_errors(f"listing the training jobs of tuning job {name}", region):
        pages = sagemaker.get_paginator(
            "list_training_jobs_for_hyper_parameter_tuning_job"
        ).paginate(HyperParameterTuningJobName=name)
        for page in pages:
            for job in page["TrainingJobSummaries"]:
                final = job.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
                values = {k: str(v).strip('"') for k, v in job["TunedHyperParameters"].items()}
                value = final.get("Value")
                rows.append(
                    Row(
                        job["TrainingJobName"],
                        values,
                        float(value) if value is not None else None,
                        {},
                        status=job.get("TrainingJobStatus", "?"),
                    )
                )
    best = rank(rows, params.tune.goal)[0] if rows else None
    notify(
        "tuning_ended",
        f"tuning job {name}: best {params.tune.objective} "
        + (f"{best.objective} with {best.values}" if best else "none"),
        params.notify,
        sns=sns,
        job=name,
    )
    return rows


# ---------------------------------------------------------------- the command


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise ConfigError(f"--set takes section.key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _cmd_tune(args: argparse.Namespace) -> int:
    from itsacat.config import params_from_hyperparameters

    params = load_params(args.params)
    sets = _parse_sets(args.set or [])
    if sets:  # validate the overrides through the same dataclasses
        params = params_from_hyperparameters(sets, base=params)
        params.check("--set")
    tune = params.tune
    if args.backend:
        params = replace(params, tune=replace(tune, backend=args.backend))
    root = Path(args.params).resolve().parent
    if params.tune.backend == "local":
        rows = tune_local(params, root, sets)
        hint = "take the best into the workspace with `dvc exp apply NAME`"
    else:
        rows = tune_sagemaker(params, prepared=root / "prepared", root=root)
        hint = "set the best values in params.yaml and run `dvc repro`"
    print(markdown(rows, params.tune.objective, params.tune.goal))
    ranked = rank(rows, params.tune.goal)
    if not ranked or ranked[0].objective is None:  # failed points rank last
        raise ItsacatError(
            f"no point of the search reported {params.tune.objective} ({len(rows)} ran, "
            "none finished): see the table above and each point's log, fix the cause and "
            "tune again"
        )
    best = ranked[0]
    print(f"\nbest: {best.name} ({params.tune.objective} = {best.objective}); {hint}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tune", help="search tune.ranges (DVC experiment queue or SageMaker tuning job)"
    )
    p.add_argument("--backend", choices=("local", "sagemaker"), help="default: tune.backend")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="an override for every point, e.g. train.epochs=200 (repeatable)",
    )
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_tune)
