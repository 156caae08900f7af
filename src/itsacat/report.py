"""The pull-request report: this branch's model against the base branch's, as Markdown.

    itsacat report --base main            writes report.md and build/report/*.png

Base values come from DVC itself: `dvc metrics diff <base> --all --json` and
`dvc params diff <base> --json` read the base revision's metrics through its dvc.lock, from
the local DVC cache or, when missing there, from the default remote (in CI: the S3 remote,
where the PR report workflow pushed each branch's outputs, main's included); DVC's file
system at the base commit does the same for the base's training curves. The branch side
is the workspace, as `dvc repro` left it.

The report holds: metrics with deltas and better/worse marks, guarded metrics flagged when
they got worse than `report.guards` allows; the params diff; training curves of both runs,
the branch's ROC, confusion matrix and per-layer insight (the PNGs drawn by `itsacat.plots`);
predictions on a few real photos; model size and training time.

Exit status: 0 when every guard holds, 2 when a guarded metric regressed (the report is
still written, with the regression flagged at the top), 1 on an error. DVC drops a metrics
file it cannot read without failing, leaving the base column empty; every metric in
`report.require` must be present on both sides, or the report says so and exits 1 rather
than print a short table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from itsacat.config import ReportParams, load_params
from itsacat.errors import ItsacatError
from itsacat.fileio import atomic_write_bytes, atomic_write_text, writable_folder

if TYPE_CHECKING:  # the CLI imports this module to build its parser: keep that cheap
    from itsacat.predict import Predictor

log = logging.getLogger(__name__)

REGRESSION_EXIT = 2
CURVE_METRICS = ("loss", "accuracy")  # what the train stage logs per split under dvclive/
CURVE_SPLITS = ("train", "val")
LIVE_PLOTS = "dvclive/plots/metrics"
EVAL_PNGS = (  # drawn by the evaluate stage with itsacat.plots; copied, not redrawn
    ("roc.png", "ROC (test)"),
    ("confusion.png", "Confusion matrix (test)"),
    ("insight_layers.png", "Per-layer insight"),
)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


class ReportError(ItsacatError):
    """The report cannot be built honestly (a missing metric, an unknown base revision)."""


# --- the pure core: DVC's JSON in, rows, verdicts and Markdown out ---------------------------


@dataclass(frozen=True)
class Row:
    """One metric of one metrics file, on the base and on this branch."""

    file: str
    key: str
    old: float | None
    new: float | None
    direction: int  # +1 higher is better, -1 lower is better, 0 neither

    @property
    def delta(self) -> float | None:
        if self.old is None or self.new is None:
            return None
        return self.new - self.old

    @property
    def worse_by(self) -> float:
        """How much worse this branch is than the base (<= 0 when not worse)."""
        d = self.delta
        return 0.0 if d is None or self.direction == 0 else -d * self.direction


@dataclass(frozen=True)
class Regression:
    key: str
    row: Row
    allowed: float


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


SPLIT_ORDER = {"test": 0, "val": 1, "train": 2}


def rows_from_metrics_diff(diff: Mapping[str, Any], first_file: str = "") -> list[Row]:
    """`dvc metrics diff --all --json` → rows: `first_file` first, then by split and key."""
    rows = []
    for file, metrics in diff.items():
        for key, change in metrics.items():
            rows.append(
                Row(
                    file=file,
                    key=key,
                    old=_number(change.get("old")),
                    new=_number(change.get("new")),
                    direction=ReportParams.direction(key),
                )
            )
    return sorted(
        rows,
        key=lambda r: (
            r.file != first_file,
            r.file,
            SPLIT_ORDER.get(r.key.split(".", 1)[0], 3),
            r.key,
        ),
    )


def _find(rows: Sequence[Row], file: str, key: str) -> Row | None:
    return next((r for r in rows if r.file == file and r.key == key), None)


def missing_metrics(rows: Sequence[Row], params: ReportParams) -> list[str]:
    """'key (base)' / 'key (branch)' for every required or guarded metric DVC did not read."""
    missing = []
    for key in dict.fromkeys([*params.require, *params.guards]):
        row = _find(rows, params.metrics_file, key)
        if row is None or row.old is None:
            missing.append(f"{key} (base)")
        if row is None or row.new is None:
            missing.append(f"{key} (branch)")
    return missing


def unknown_metrics(rows: Sequence[Row], params: ReportParams) -> str | None:
    """When DVC read the metrics file but neither side has a required or guarded key (a
    typo in params.yaml, most likely), the message that says so; else None."""
    keys = [r.key for r in rows if r.file == params.metrics_file]
    if not keys:
        return None  # DVC read the file on neither side: not a question of keys
    unknown = [
        f"{key} (report.{'require' if key in params.require else 'guards'} in params.yaml)"
        for key in dict.fromkeys([*params.require, *params.guards])
        if key not in keys
    ]
    if not unknown:
        return None
    return (
        f"{params.metrics_file} has no key {', '.join(unknown)}; keys it has: "
        f"{', '.join(keys)}. Fix the name in params.yaml."
    )


def regressions(rows: Sequence[Row], params: ReportParams) -> list[Regression]:
    """Guarded metrics that got worse by more than their guard allows."""
    found = []
    for key, allowed in params.guards.items():
        row = _find(rows, params.metrics_file, key)
        # a guarded metric is also required, so a missing one is reported before this
        if row is not None and row.worse_by > allowed + 1e-12:
            found.append(Regression(key, row, allowed))
    return found


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.4g}"


def fmt_delta(row: Row) -> str:
    d = row.delta
    if d is None:
        return "—"
    if abs(d) < 1e-12:
        return "0"
    if float(d).is_integer():
        return f"{int(d):+,}"
    return f"{d:+.4g}"


def mark(row: Row, guards: Mapping[str, float], metrics_file: str) -> str:
    d = row.delta
    if d is None:
        return "new" if row.old is None else "gone"
    if row.direction == 0 or abs(d) < 1e-12:
        return ""
    if row.worse_by <= 0:
        return "✅ better"
    allowed = guards.get(row.key) if row.file == metrics_file else None
    if allowed is not None and row.worse_by > allowed + 1e-12:
        return f"🛑 worse, beyond the guard ({allowed:g})"
    return "⚠️ worse"


def metrics_table(rows: Sequence[Row], params: ReportParams) -> str:
    lines = ["| metric | base | branch | Δ | |", "| --- | ---: | ---: | ---: | --- |"]
    for r in rows:
        name = r.key if r.file == params.metrics_file else f"{r.file}: {r.key}"
        if r.file == params.metrics_file and r.key in params.guards:
            name += " 🔒"
        lines.append(
            f"| {name} | {fmt(r.old)} | {fmt(r.new)} | {fmt_delta(r)} | "
            f"{mark(r, params.guards, params.metrics_file)} |"
        )
    return "\n".join(lines)


def params_table(diff: Mapping[str, Any]) -> str:
    """`dvc params diff --json` → a Markdown table (or a line saying nothing changed)."""
    lines = []
    for file, changes in sorted(diff.items()):
        for key, change in sorted(changes.items()):
            lines.append(
                f"| {file}: {key} | `{json.dumps(change.get('old'))}` | "
                f"`{json.dumps(change.get('new'))}` |"
            )
    if not lines:
        return "No parameter changed."
    return "\n".join(["| param | base | branch |", "| --- | --- | --- |", *lines])


@dataclass(frozen=True)
class PhotoVerdict:
    photo: str
    label: str
    probability: float
    threshold: float  # the branch model's: a cat from P(cat) >= this


@dataclass(frozen=True)
class Report:
    """Everything the Markdown shows, gathered by the shell."""

    base: str  # as the user named it
    base_sha: str
    head_sha: str
    rows: list[Row]
    params_diff: Mapping[str, Any]
    params: ReportParams
    images: list[tuple[str, str]]  # (title, path relative to report.md)
    notes: list[str]
    verdicts: list[PhotoVerdict]
    model: str | None  # "version, layer sizes" of the branch's model


def render(report: Report) -> str:
    """The report as Markdown."""
    p = report.params
    found = regressions(report.rows, p)
    out = [
        "# itsacat model report",
        "",
        f"This branch (`{report.head_sha}`) against `{report.base}` (`{report.base_sha}`).",
        "",
    ]
    if found:
        out.append("## 🛑 Regression")
        out.append("")
        for reg in found:
            r = reg.row
            out.append(
                f"- **{reg.key}** went from {fmt(r.old)} to {fmt(r.new)} ({fmt_delta(r)}): "
                f"worse by {r.worse_by:.4g}, more than the {reg.allowed:g} that "
                "`report.guards` in params.yaml allows."
            )
        out.append("")
    else:
        guarded = ", ".join(f"{k} (may worsen by {v:g})" for k, v in p.guards.items()) or "none"
        out += [f"✅ Every guarded metric holds: {guarded}.", ""]

    size = _find(report.rows, p.metrics_file, "model.size_bytes")
    secs = _find(report.rows, p.metrics_file, "model.train_seconds")
    epochs = _find(report.rows, p.metrics_file, "model.epochs_run")
    out += ["## Model", ""]
    if report.model:
        out.append(f"- {report.model}")
    if size is not None:
        out.append(f"- size: {_mb(size.new)} (base {_mb(size.old)})")
    if secs is not None:
        run = f" for {fmt(epochs.new)} epochs" if epochs is not None else ""
        out.append(f"- training time: {fmt(secs.new)} s{run} (base {fmt(secs.old)} s)")
    out += ["", "## Metrics", "", metrics_table(report.rows, p), ""]
    out.append("🔒 guarded by `report.guards`. Lower is better for loss, size and time.")
    out += ["", "## Params", "", params_table(report.params_diff), ""]
    if report.images:
        out += ["## Plots", ""]
        for title, path in report.images:
            out += [f"### {title}", "", f"![{title}]({path})", ""]
    out += ["## Predictions on real photos", ""]
    if report.verdicts:
        cut = report.verdicts[0].threshold
        out += [f"A photo is a cat from P(cat) {cut:g} up (`model.threshold`).", ""]
        out += ["| photo | verdict | P(cat) |", "| --- | --- | ---: |"]
        out += [f"| {v.photo} | {v.label} | {v.probability:.3f} |" for v in report.verdicts]
        out.append("")
    for note in report.notes:
        out.append(f"> {note}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_failure(base: str, problem: str) -> str:
    return f"# itsacat model report\n\n## ❌ No report against `{base}`\n\n{problem}\n"


def _mb(n: float | None) -> str:
    return "—" if n is None else f"{n / 1e6:.2f} MB"


def parse_tsv(text: str) -> dict[str, list[float]]:
    """A dvclive TSV (`step<TAB>loss` …) → column name → values."""
    lines = [ln.split("\t") for ln in text.strip().splitlines()]
    if not lines:
        return {}
    header, body = lines[0], lines[1:]
    return {name: [float(row[i]) for row in body] for i, name in enumerate(header)}


def curves_from_tsvs(tsvs: Mapping[tuple[str, str], str]) -> dict[str, Sequence[float]]:
    """{(split, metric): TSV text} → the dict `plots.training_curves` draws for one run."""
    curve: dict[str, Sequence[float]] = {}
    for (split, metric), text in tsvs.items():
        cols = parse_tsv(text)
        if metric not in cols or "step" not in cols:
            continue
        curve.setdefault("epoch", cols["step"])
        curve[f"{split}_{metric}"] = cols[metric]
    return curve


# --- the shell: git, DVC, files ---------------------------------------------------------------


def _run(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, check=False)


def _dvc_json(args: Sequence[str], cwd: Path) -> Any:
    # `python -m dvc` runs the DVC of this very environment, whatever PATH says
    proc = _run([sys.executable, "-m", "dvc", *args], cwd)
    if proc.returncode != 0:
        raise ReportError(
            f"`dvc {' '.join(args)}` failed (exit {proc.returncode}): "
            + (proc.stderr.strip().splitlines() or ["no message"])[-1]
        )
    for line in proc.stderr.splitlines():
        if line.strip():
            log.warning("dvc: %s", line.strip())
    return json.loads(proc.stdout or "{}")


def resolve_rev(rev: str, cwd: Path) -> str:
    """`rev` (or `origin/rev`, as CI checkouts have it) → a full commit SHA."""
    for candidate in (rev, f"origin/{rev}"):
        proc = _run(["git", "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}"], cwd)
        if proc.returncode == 0:
            return proc.stdout.strip()
    raise ReportError(
        f"base revision {rev!r} is not in this git repository; fetch it "
        f"(`git fetch origin {rev}`, or `fetch-depth: 0` on actions/checkout) or pass --base REV"
    )


def _read_tsvs(root: Path, rev: str | None) -> dict[tuple[str, str], str]:
    """The training-curve TSVs of the workspace (rev None) or of a revision, through DVC's
    file system (the cache, else the default remote)."""
    from dvc.exceptions import DvcException

    fs: Any = None
    if rev is not None:
        from dvc.fs import DVCFileSystem

        fs = DVCFileSystem(repo=str(root), rev=rev)
    tsvs = {}
    for split in CURVE_SPLITS:
        for metric in CURVE_METRICS:
            rel = f"{LIVE_PLOTS}/{split}/{metric}.tsv"
            try:
                text = (root / rel).read_text() if fs is None else fs.read_text(rel)
            except (OSError, DvcException) as exc:  # missing in that revision or its cache
                log.debug("no %s at %s: %s", rel, rev or "workspace", exc)
                continue
            tsvs[(split, metric)] = text
    return tsvs


def _photos(root: Path, params: ReportParams, given: Sequence[str] | None) -> list[Path]:
    if given:
        return [root / p for p in given]
    if params.photos:
        return [root / p for p in params.photos]
    folder = root / params.photo_dir
    if not folder.is_dir():
        return []
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    return found[: params.max_photos] if params.max_photos else found


def _predict(predictor: Predictor, photos: Sequence[Path]) -> list[PhotoVerdict]:
    verdicts = []
    for photo in photos:
        try:
            data = photo.read_bytes()
        except OSError as exc:
            raise ReportError(
                f"cannot read photo {photo}: {exc.strerror}; fix report.photos or "
                "report.photo_dir in params.yaml, or pass --photos"
            ) from None
        try:
            p = predictor.predict_bytes(data)
        except ItsacatError as exc:  # as `itsacat predict` says it: which photo, and why
            raise ReportError(f"{photo}: {exc}") from None
        verdicts.append(PhotoVerdict(photo.name, p.label, p.probability, p.threshold))
    return verdicts


def build(
    base: str,
    root: Path = Path("."),
    out: Path = Path("report.md"),
    plots_dir: Path = Path("build/report"),
    photos: Sequence[str] | None = None,
) -> tuple[Report, list[Regression]]:
    """Gather everything, write `out` and the PNGs, return the report and its regressions."""
    from itsacat import plots
    from itsacat.artifacts import load_model
    from itsacat.predict import Predictor

    root = root.resolve()
    out = out if out.is_absolute() else root / out
    plots_dir = plots_dir if plots_dir.is_absolute() else root / plots_dir
    if out.is_dir():
        raise ReportError(f"--out {out} is a folder; name the Markdown file to write")
    for folder in (out.parent, plots_dir):  # before DVC's slow diffs, not after
        writable_folder(folder)
    all_params = load_params(root / "params.yaml")
    params = all_params.report
    base_sha = resolve_rev(base, root)
    head_sha = _run(["git", "rev-parse", "--short", "HEAD"], root).stdout.strip() or "workspace"

    diff = _dvc_json(["metrics", "diff", base_sha, "--all", "--json"], root)
    rows = rows_from_metrics_diff(diff, params.metrics_file)
    problem = unknown_metrics(rows, params)
    if problem is not None:
        atomic_write_text(out, render_failure(base, problem))
        raise ReportError(problem)
    missing = missing_metrics(rows, params)
    if missing:
        problem = (
            f"DVC could not read these metrics of {params.metrics_file}: "
            + ", ".join(missing)
            + ". A base value is missing when the base commit's outputs are in neither the "
            "DVC cache nor the default remote (the PR report workflow pushes every branch's "
            "outputs with `dvc push -r s3 --run-cache`; for an older base, run `dvc repro` "
            "there and `dvc push`); a branch value is missing when `dvc repro` did not write "
            "it. The report is not built from a partial table."
        )
        atomic_write_text(out, render_failure(base, problem))
        raise ReportError(problem)
    params_diff = _dvc_json(["params", "diff", base_sha, "--json"], root)

    notes: list[str] = []
    images: list[tuple[str, str]] = []
    plots_dir.mkdir(parents=True, exist_ok=True)
    curves: dict[str, dict[str, Sequence[float]]] = {}
    for name, rev in (("base", base_sha), ("branch", None)):
        curve = curves_from_tsvs(_read_tsvs(root, rev))
        if curve:
            curves[name] = curve
        else:
            notes.append(f"No training curves for {name}: {LIVE_PLOTS} is not readable there.")
    if curves:
        plots.training_curves(curves, plots_dir / "training_curves.png", "base vs branch")
        images.append(("Training curves", "training_curves.png"))
    for png, title in EVAL_PNGS:
        src = root / "eval" / png
        if src.is_file():
            atomic_write_bytes(plots_dir / png, src.read_bytes())
            images.append((title, png))
        else:
            notes.append(f"No {title.lower()}: eval/{png} is missing (did `dvc repro` run?).")
    rel = Path(os.path.relpath(plots_dir, out.parent))
    images = [(title, (rel / name).as_posix()) for title, name in images]

    model = load_model(root / "model")
    predictor = Predictor(model)
    chosen = _photos(root, params, photos)
    verdicts = _predict(predictor, chosen)
    if not chosen:
        notes.append(
            f"No photos to classify: no JPEG or PNG in {params.photo_dir} (from the repository "
            "root); set report.photos or report.photo_dir in params.yaml, or pass --photos."
        )
    report = Report(
        base=base,
        base_sha=base_sha[:7],
        head_sha=head_sha,
        rows=rows,
        params_diff=params_diff,
        params=params,
        images=images,
        notes=notes,
        verdicts=verdicts,
        model=f"version `{model.version}`, layers {model.network.sizes}",
    )
    atomic_write_text(out, render(report))
    return report, regressions(rows, params)


def _cmd_report(args: argparse.Namespace) -> int:
    _, found = build(args.base, Path("."), Path(args.out), Path(args.plots_dir), args.photos)
    log.info("wrote %s", args.out)
    for reg in found:
        print(
            f"itsacat: regression: {reg.key} got worse by {reg.row.worse_by:.4g} "
            f"({fmt(reg.row.old)} → {fmt(reg.row.new)}), more than the {reg.allowed:g} "
            "allowed by report.guards in params.yaml",
            file=sys.stderr,
        )
    return REGRESSION_EXIT if found else 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="this branch's model against a base branch's, as Markdown (for pull requests)",
        description="Exit 0: every guard holds; 2: a guarded metric regressed; 1: an error.",
    )
    p.add_argument("--base", default="main", help="the git revision to compare with")
    p.add_argument("--out", default="report.md", help="the Markdown file to write")
    p.add_argument("--plots-dir", default="build/report", help="where the PNGs go")
    p.add_argument(
        "--photos", nargs="+", metavar="PHOTO", help="photos to classify (default: report.*)"
    )
    p.set_defaults(func=_cmd_report)
