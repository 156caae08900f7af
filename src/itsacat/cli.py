"""`itsacat`: the command line.

    itsacat prepare | train | evaluate      the DVC stages, the same functions `dvc repro` runs
    itsacat predict PHOTO…                  a label and P(cat) for each photo
    itsacat inspect [--layer N]             what each layer (or one layer's perceptrons) did
    itsacat explain PHOTO                   one photo traced through every layer

Other commands (serve, deploy, report, …) live in their own modules and register here
through `COMMANDS`. A user's mistake prints one `itsacat: error: …` line and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from itsacat.errors import ItsacatError

# name → module with `register(subparsers)`; each module's parser sets `func`.
COMMANDS: dict[str, str] = {
    "serve": "itsacat.serve.server",
    "package": "itsacat.serve.package",
    "aws": "itsacat.aws.cli",
    "tune": "itsacat.aws.tuning",
    "report": "itsacat.report",
    "deploy": "itsacat.deploy.cli",
    "endpoint": "itsacat.deploy.endpoint_cli",
}


def _cmd_stage(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"itsacat.stages.{args.command}")
    return int(module.main())


def _cmd_predict(args: argparse.Namespace) -> int:
    from itsacat.predict import Predictor

    predictor = Predictor.load(args.model_dir)
    status = 0
    for photo in args.photos:
        try:
            data = Path(photo).read_bytes()
        except OSError as exc:
            print(f"itsacat: error: cannot read {photo}: {exc.strerror}", file=sys.stderr)
            status = 1
            continue
        try:
            p = predictor.predict_bytes(data)
        except ItsacatError as exc:
            print(f"itsacat: error: {photo}: {exc}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps({"photo": photo, **p.to_json()}))
        else:
            print(f"{photo}: {p.label} (P(cat) = {p.probability:.3f}; {_cat_from(p.threshold)})")
    return status


def _cat_from(threshold: float) -> str:
    """How a verdict is reached, for people: the model's threshold."""
    return f"a cat from {threshold:g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in header]] + [
        [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_inspect(args: argparse.Namespace) -> int:
    from itsacat.insight import LAYER_STATS, PERCEPTRON_STATS, load_insight

    insight = load_insight(args.insight_dir)
    if not insight.rows:
        raise ItsacatError(
            f"{args.insight_dir} is empty: training ran with train.insight_every: 0; "
            "set it > 0 in params.yaml and run `dvc repro`"
        )
    epochs = [int(e) for e in insight.epochs]
    epoch = args.epoch if args.epoch is not None else epochs[-1]
    if epoch not in epochs:
        raise ItsacatError(f"no insight recorded at epoch {epoch}; recorded: {epochs}")
    if args.layer is None:
        rows = insight.layer_rows(epoch)
        print(f"per-layer insight at epoch {epoch} (recorded: {epochs[0]}…{epochs[-1]})")
        print(
            _table(
                ("layer", "size", *LAYER_STATS),
                [[r["layer"], r["size"], *(r[s] for s in LAYER_STATS)] for r in rows],
            )
        )
        return 0
    if not 1 <= args.layer <= insight.n_layers:
        raise ItsacatError(f"--layer must be 1…{insight.n_layers}, got {args.layer}")
    stats = insight.perceptrons(args.layer, epoch)
    n = len(stats["act_mean"])
    print(f"layer {args.layer}: {n} perceptrons at epoch {epoch}")
    print(
        _table(
            ("unit", *PERCEPTRON_STATS),
            [[i, *(float(stats[s][i]) for s in PERCEPTRON_STATS)] for i in range(n)],
        )
    )
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from itsacat.predict import Predictor

    predictor = Predictor.load(args.model_dir)
    try:
        data = Path(args.photo).read_bytes()
    except OSError as exc:
        raise ItsacatError(f"cannot read {args.photo}: {exc.strerror}") from None
    try:
        p = predictor.predict_bytes(data, trace=True)
    except ItsacatError as exc:  # name the photo, as `itsacat predict` does
        raise ItsacatError(f"{args.photo}: {exc}") from None
    if args.json:
        print(json.dumps(p.to_json()))
        return 0
    print(f"{args.photo} → 64×64×3 pixels → {predictor.model.network.sizes}")
    trace = p.trace or []
    for layer in trace[:-1]:
        out = layer.outputs
        fired = sum(v > (0.5 if layer.activation == "sigmoid" else 0.0) for v in out)
        print(
            f"layer {layer.layer} ({layer.activation}, {len(out)} perceptron"
            f"{'s' if len(out) != 1 else ''}, {fired} fired): " + " ".join(f"{v:.3f}" for v in out)
        )
    if trace:
        print(f"layer {trace[-1].layer} (sigmoid output, P(cat)): {trace[-1].outputs[0]:.3f}")
    print(
        f"verdict: {p.label} (P(cat) = {p.probability:.3f}; {_cat_from(p.threshold)}), "
        f"model {p.model_version}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="itsacat", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("prepare", "run the prepare stage"),
        ("train", "run the train stage"),
        ("evaluate", "run the evaluate stage"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=_cmd_stage)

    p = sub.add_parser("predict", help="classify photos (JPEG, PNG, any size)")
    p.add_argument("photos", nargs="+", metavar="PHOTO")
    p.add_argument("--model-dir", default="model")
    p.add_argument("--json", action="store_true", help="one JSON object per photo")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("inspect", help="per-layer (or per-perceptron) training insight")
    p.add_argument("--layer", type=int, help="show this layer's perceptrons (1 = first hidden)")
    p.add_argument("--epoch", type=int, help="a recorded epoch (default: the last)")
    p.add_argument("--insight-dir", default="insight")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("explain", help="trace one photo through every layer")
    p.add_argument("photo", metavar="PHOTO")
    p.add_argument("--model-dir", default="model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_explain)

    for module in COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from itsacat.stages._common import os_error_message, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the try, for the last lines
        return status
    except BrokenPipeError:
        # the reader left (`itsacat predict *.jpg | head -1`): stop quietly, as Python's
        # docs on SIGPIPE advise; stdout goes to devnull so the exit flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ItsacatError as exc:
        print(f"itsacat: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"itsacat: error: {os_error_message(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("itsacat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
