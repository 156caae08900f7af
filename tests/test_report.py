"""`itsacat report`: the pull-request report.

Unit tests feed the pure core the JSON DVC really prints. The pipeline test builds a real
git repository with two commits whose params.yaml differ, runs a real (short) `dvc repro`
on each, and checks the report against the metrics.json each commit produced: numbers,
deltas, the regression gate both ways, and a clear failure when DVC cannot read the base.

    .venv/bin/pytest tests/test_report.py            (-m "not pipeline" for the fast half)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from itsacat.config import ReportParams, params_from_dict
from itsacat.errors import ConfigError
from itsacat.predict import Predictor
from itsacat.report import (
    ReportError,
    Row,
    _predict,
    curves_from_tsvs,
    fmt,
    mark,
    metrics_table,
    missing_metrics,
    params_table,
    regressions,
    rows_from_metrics_diff,
    unknown_metrics,
)
from itsacat.scratch import copy_worktree, init_scratch_repo

BIN = Path(sys.executable).parent

# trimmed from `dvc metrics diff base --all --json` on two real runs
DIFF: dict[str, Any] = {
    "dvclive/metrics.json": {
        "train.loss": {"old": 0.6662, "new": 0.5729, "diff": -0.0933},
        "step": {"old": 30, "new": 30, "diff": 0},
    },
    "metrics.json": {
        "test.accuracy": {"old": 0.72, "new": 0.6, "diff": -0.12},
        "test.log_loss": {"old": 0.677276, "new": 0.718698, "diff": 0.041422},
        "test.precision": {"old": 0.806452, "new": 0.809524, "diff": 0.003072},
        "train.accuracy": {"old": 0.717703, "new": 0.856459, "diff": 0.138756},
        "model.size_bytes": {"old": 1035194, "new": 1035194, "diff": 0},
        "model.epochs_run": {"old": 30, "new": 20, "diff": -10},
    },
}


def _params(**report: Any) -> ReportParams:
    return params_from_dict({"report": report}).report


def _row(rows: list[Row], key: str, file: str = "metrics.json") -> Row:
    return next(r for r in rows if r.key == key and r.file == file)


# --- the pure core --------------------------------------------------------------------------


def test_rows_carry_old_new_and_direction() -> None:
    rows = rows_from_metrics_diff(DIFF, "metrics.json")
    acc = _row(rows, "test.accuracy")
    assert (acc.old, acc.new, acc.direction) == (0.72, 0.6, 1)
    assert acc.delta == pytest.approx(-0.12)
    assert acc.worse_by == pytest.approx(0.12)
    loss = _row(rows, "test.log_loss")
    assert loss.direction == -1 and loss.worse_by == pytest.approx(0.041422)
    assert _row(rows, "test.precision").worse_by < 0  # better
    assert _row(rows, "model.epochs_run").direction == 0
    assert _row(rows, "train.loss", "dvclive/metrics.json").direction == -1
    # the guarded file first, test before train before model
    keys = [r.key for r in rows if r.file == "metrics.json"]
    assert keys == [
        "test.accuracy",
        "test.log_loss",
        "test.precision",
        "train.accuracy",
        "model.epochs_run",
        "model.size_bytes",
    ]
    assert rows[-1].file == "dvclive/metrics.json"


@pytest.mark.parametrize(
    ("guards", "flagged"),
    [
        ({"test.accuracy": 0.02}, ["test.accuracy"]),  # dropped 0.12
        ({"test.accuracy": 0.12}, []),  # exactly at the guard holds
        ({"test.accuracy": 0.2}, []),
        ({"test.log_loss": 0.01}, ["test.log_loss"]),  # lower is better: a rise of 0.041
        ({"test.log_loss": 0.05}, []),
        ({"test.precision": 0.0}, []),  # it improved
        ({"train.accuracy": 0.0, "test.accuracy": 0.0}, ["test.accuracy"]),
    ],
)
def test_regression_gate(guards: dict[str, float], flagged: list[str]) -> None:
    params = _params(guards=guards, require=[])
    rows = rows_from_metrics_diff(DIFF, params.metrics_file)
    assert [r.key for r in regressions(rows, params)] == flagged


def test_missing_metrics_name_the_side() -> None:
    diff = json.loads(json.dumps(DIFF))
    diff["metrics.json"]["test.accuracy"]["old"] = None  # what DVC prints when it cannot read
    del diff["metrics.json"]["test.log_loss"]
    params = _params(require=["test.accuracy", "test.log_loss", "model.size_bytes"], guards={})
    missing = missing_metrics(rows_from_metrics_diff(diff), params)
    assert missing == ["test.accuracy (base)", "test.log_loss (base)", "test.log_loss (branch)"]


def test_guarded_metrics_are_required_too() -> None:
    params = _params(require=[], guards={"test.f1": 0.01})
    assert missing_metrics(rows_from_metrics_diff(DIFF), params) == [
        "test.f1 (base)",
        "test.f1 (branch)",
    ]


def test_a_key_metrics_json_lacks_is_named_with_the_keys_it_has() -> None:
    """A typo in params.yaml is not DVC's fault: the file was read, the key is not in it."""
    rows = rows_from_metrics_diff(DIFF, "metrics.json")
    params = _params(require=["test.acuracy", "test.accuracy"], guards={"test.f1": 0.01})
    assert unknown_metrics(rows, params) == (
        "metrics.json has no key test.acuracy (report.require in params.yaml), test.f1 "
        "(report.guards in params.yaml); keys it has: test.accuracy, test.log_loss, "
        "test.precision, train.accuracy, model.epochs_run, model.size_bytes. "
        "Fix the name in params.yaml."
    )
    assert unknown_metrics(rows, _params(require=["test.accuracy"], guards={})) is None


def test_a_metrics_file_dvc_read_on_neither_side_is_not_a_question_of_keys() -> None:
    rows = rows_from_metrics_diff({"dvclive/metrics.json": DIFF["dvclive/metrics.json"]})
    params = _params(require=["test.accuracy"], guards={})
    assert unknown_metrics(rows, params) is None
    assert missing_metrics(rows, params) == ["test.accuracy (base)", "test.accuracy (branch)"]


def test_a_report_photo_that_is_not_an_image_is_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hi\n")
    with pytest.raises(ReportError, match=f"^{re.escape(str(notes))}: the 3 bytes are not a JPEG"):
        _predict(Predictor.load(tiny_model_dir), [notes])


def test_marks_and_table() -> None:
    params = _params(guards={"test.accuracy": 0.02})
    rows = rows_from_metrics_diff(DIFF, params.metrics_file)
    assert mark(_row(rows, "test.accuracy"), params.guards, "metrics.json").startswith("🛑")
    assert mark(_row(rows, "test.log_loss"), params.guards, "metrics.json") == "⚠️ worse"
    assert mark(_row(rows, "train.accuracy"), params.guards, "metrics.json") == "✅ better"
    assert mark(_row(rows, "model.size_bytes"), params.guards, "metrics.json") == ""
    table = metrics_table(rows, params)
    assert "| test.accuracy 🔒 | 0.72 | 0.6 | -0.12 | 🛑" in table
    assert "| model.size_bytes | 1,035,194 | 1,035,194 | 0 |" in table
    assert "| dvclive/metrics.json: train.loss | 0.6662 | 0.5729 | -0.0933 | ✅ better |" in table


def test_params_table() -> None:
    diff = {"params.yaml": {"train.learning_rate": {"old": 0.0075, "new": 0.03}}}
    assert "| params.yaml: train.learning_rate | `0.0075` | `0.03` |" in params_table(diff)
    assert params_table({}) == "No parameter changed."


def test_fmt() -> None:
    assert fmt(None) == "—"
    assert fmt(0.123456) == "0.1235"
    assert fmt(1.0) == "1"
    assert fmt(1035194) == "1,035,194"


def test_curves_from_dvclive_tsvs() -> None:
    curve = curves_from_tsvs(
        {
            ("train", "loss"): "step\tloss\n1\t0.7\n5\t0.6\n",
            ("train", "accuracy"): "step\taccuracy\n1\t0.4\n5\t0.7\n",
        }
    )
    assert curve == {"epoch": [1.0, 5.0], "train_loss": [0.7, 0.6], "train_accuracy": [0.4, 0.7]}


@pytest.mark.parametrize(
    ("report", "message"),
    [
        ({"guards": {"model.epochs_run": 1}}, "report.guards.model.epochs_run"),
        ({"guards": {"test.accuracy": -0.1}}, ">= 0"),
        ({"guards": {"test.accuracy": "a lot"}}, "a number"),
        ({"max_photos": -1}, "report.max_photos"),
        ({"gaurds": {}}, "unknown key report.gaurds"),
    ],
)
def test_bad_report_params_are_refused(report: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        params_from_dict({"report": report})


def test_params_yaml_report_section_loads(repo_root: Path) -> None:
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    report = params_from_dict(raw).report
    assert report.guards and set(report.guards) <= set(report.require)


# --- the real thing: two commits, two `dvc repro`s, DVC's own diff --------------------------

FAST = {  # a few seconds of training per commit
    "train": {"epochs": 30, "log_every": 5, "insight_every": 10},
    "evaluate": {"gallery_size": 2},
}


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def _run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def _git(cwd: Path, *args: str) -> str:
    return _run(cwd, "git", "-c", "user.name=t", "-c", "user.email=t@t", *args).stdout


def _set_params(root: Path, changes: dict[str, dict[str, Any]]) -> None:
    path = root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in changes.items():
        raw.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _flat(obj: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def _table_rows(report: str) -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[1] not in ("base", "---:"):
            rows[cells[0].replace(" 🔒", "")] = (cells[1], cells[2], cells[3])
    return rows


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _commit_and_repro(root: Path, message: str) -> dict[str, Any]:
    """Commit the params (dvclive wants a commit), reproduce, commit dvc.lock; the metrics."""
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", message)
    _run(root, "dvc", "repro", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", f"{message}: dvc repro")
    return json.loads((root / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_commits(
    tmp_path_factory: pytest.TempPathFactory, repo_root: Path, shared_dir: Path
) -> Iterator[dict[str, Any]]:
    """A git repo: `main` with one params.yaml, `feature` with a learning rate too small for
    its 30 epochs (so some test metric surely gets worse: ROC AUC 0.79 → 0.67 when this
    was written); a real `dvc repro` on each, so the DVC cache holds both commits' outputs."""
    root = tmp_path_factory.mktemp("report-repo")
    copy_worktree(repo_root, root, exclude=(".github/",))
    init_scratch_repo(root, shared_dir / "dvc-store", commit=False)
    _run(root, "dvc", "pull", "-q", "data.dvc")  # read-only use of the shared store
    _set_params(root, FAST)
    base = _commit_and_repro(root, "base: 30 epochs")
    _git(root, "checkout", "-qb", "feature")
    _set_params(root, {"train": {"learning_rate": 0.001}})
    branch = _commit_and_repro(root, "feature: learning rate 0.001")
    assert _flat(base) != _flat(branch)
    yield {"root": root, "base": _flat(base), "branch": _flat(branch), "photos": shared_dir}


def _report(root: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    (root / "report.md").unlink(missing_ok=True)
    proc = _run(root, "itsacat", "report", "--base", "main", *args, check=False)
    text = (root / "report.md").read_text() if (root / "report.md").exists() else ""
    return proc, text


def _guard(root: Path, guards: dict[str, float]) -> None:
    """Guards live in params.yaml; no stage reads `report`, so nothing needs re-running."""
    _set_params(root, {"report": {"guards": guards}})


def _worse(c: dict[str, Any], key: str) -> float:
    sign = ReportParams.direction(key)
    return (c["base"][key] - c["branch"][key]) * sign


@pytest.mark.pipeline
def test_report_shows_each_commits_numbers_and_deltas(two_commits: dict[str, Any]) -> None:
    root = two_commits["root"]
    _guard(root, {"test.accuracy": 1.0})  # nothing can fail this one
    photo = str(two_commits["photos"] / "images" / "cat-grumpy.jpeg")
    proc, text = _report(root, "--photos", photo)
    assert proc.returncode == 0, proc.stderr
    rows = _table_rows(text)
    for key, old in two_commits["base"].items():
        if key == "model.train_seconds":
            continue  # wall time: checked for presence only
        new = two_commits["branch"][key]
        shown_old, shown_new, shown_delta = rows[key]
        assert _num(shown_old) == pytest.approx(old, rel=1e-3, abs=1e-4), key
        assert _num(shown_new) == pytest.approx(new, rel=1e-3, abs=1e-4), key
        if new == old:
            assert shown_delta == "0", key
        else:
            assert _num(shown_delta) == pytest.approx(new - old, rel=1e-3, abs=1e-4), key
    assert "model.train_seconds" in rows
    assert "| params.yaml: train.learning_rate | `0.0075` | `0.001` |" in text
    assert "cat-grumpy.jpeg" in text
    threshold = yaml.safe_load((root / "params.yaml").read_text())["model"]["threshold"]
    assert f"A photo is a cat from P(cat) {threshold:g} up (`model.threshold`)." in text
    for png in ("training_curves.png", "roc.png", "confusion.png", "insight_layers.png"):
        path = root / "build" / "report" / png
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert f"(build/report/{png})" in text
    assert "No training curves" not in text  # the base's curves came through DVC


@pytest.mark.pipeline
def test_regression_gate_fires_beyond_the_guard_and_not_within(
    two_commits: dict[str, Any],
) -> None:
    root = two_commits["root"]
    guardable = [k for k in two_commits["base"] if k.startswith("test.")]
    worse = {k: _worse(two_commits, k) for k in guardable if _worse(two_commits, k) > 1e-3}
    assert worse, "the two learning rates scored the same on every test metric"
    key, by = max(worse.items(), key=lambda kv: kv[1])

    _guard(root, {key: round(by / 2, 6)})
    proc, text = _report(root)
    assert proc.returncode == 2, proc.stderr
    assert "## 🛑 Regression" in text and f"**{key}**" in text
    assert f"itsacat: regression: {key} got worse" in proc.stderr

    _guard(root, {key: round(by * 2, 6)})
    proc, text = _report(root)
    assert proc.returncode == 0, proc.stderr
    assert "🛑" not in text and "Every guarded metric holds" in text


@pytest.mark.pipeline
def test_base_values_come_from_the_remote_in_a_fresh_clone(
    two_commits: dict[str, Any], tmp_path: Path
) -> None:
    """CI's situation: a clone whose cache holds only the branch's outputs, `main` only as
    origin/main, and main's outputs in the default remote (pushed by earlier PR runs)."""
    root, remote, clone = two_commits["root"], tmp_path / "remote", tmp_path / "clone"
    _run(root, "dvc", "remote", "add", "--local", "scratch", str(remote))
    _run(root, "dvc", "push", "-q", "--all-branches", "-r", "scratch")
    _run(tmp_path, "git", "clone", "-q", str(root), str(clone))
    assert _run(clone, "git", "branch", "--show-current").stdout.strip() == "feature"
    _run(clone, "dvc", "remote", "add", "--local", "--default", "scratch", str(remote))
    _run(clone, "dvc", "pull", "-q")  # the branch's outputs only
    proc, text = _report(clone)
    assert proc.returncode in (0, 2), proc.stderr  # 2: the committed guards may fire
    rows = _table_rows(text)
    for key in ("test.accuracy", "test.log_loss", "train.accuracy"):
        assert _num(rows[key][0]) == pytest.approx(two_commits["base"][key], rel=1e-3)
    assert "No training curves" not in text  # main's curves streamed from the remote too


@pytest.mark.pipeline
def test_a_typo_in_report_require_names_the_key_not_dvc(two_commits: dict[str, Any]) -> None:
    root = two_commits["root"]
    before = (root / "params.yaml").read_text()
    _set_params(root, {"report": {"require": ["test.acuracy"], "guards": {}}})
    try:
        proc, text = _report(root)
    finally:
        (root / "params.yaml").write_text(before)
    assert proc.returncode == 1
    line = "metrics.json has no key test.acuracy (report.require in params.yaml); keys it has: "
    assert f"itsacat: error: {line}" in proc.stderr and "test.accuracy" in proc.stderr
    assert "DVC could not read" not in proc.stderr and line in text


@pytest.mark.pipeline
def test_unreadable_base_metrics_fail_clearly(two_commits: dict[str, Any]) -> None:
    """DVC prints null for metrics it cannot read; the report refuses a partial table."""
    root = two_commits["root"]
    lock = yaml.safe_load(_git(root, "show", "main:dvc.lock"))
    md5 = next(o["md5"] for o in lock["stages"]["evaluate"]["outs"] if o["path"] == "metrics.json")
    cached = root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    hidden = cached.with_name(cached.name + ".hidden")
    cached.rename(hidden)
    try:
        proc, text = _report(root)
    finally:
        hidden.rename(cached)
    assert proc.returncode == 1
    assert "test.accuracy (base)" in proc.stderr and "itsacat: error:" in proc.stderr
    assert "No report against `main`" in text
    assert "| metric |" not in text  # no short table
