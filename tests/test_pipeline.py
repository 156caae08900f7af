"""The pipeline for real: DVC's own CLI in a temporary clone of this working tree.

`dvc pull` from ../shared/dvc-store, `dvc repro`, metrics, a no-op second repro, an
evaluate-only change that re-runs only evaluate, an experiment with `-S`, the CLI on the
model the pipeline produced, and a `dvc repro` stopped by Ctrl-C that the next one carries
on. One clone serves the whole module (it takes a minute).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from itsacat.scratch import copy_worktree, init_scratch_repo
from signals import signal_when
from stage import saved_outputs

pytestmark = pytest.mark.pipeline
BIN = Path(sys.executable).parent


def _run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def clone_worktree(repo: Path, dest: Path, shared: Path) -> Path:
    """This working tree as a fresh git repo, its `local` remote on the shared store."""
    copy_worktree(repo, dest)
    init_scratch_repo(dest, shared / "dvc-store")
    return dest


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, repo_root: Path, shared_dir: Path
) -> Iterator[Path]:
    dest = clone_worktree(repo_root, tmp_path_factory.mktemp("clone"), shared_dir)
    _run(dest, "dvc", "pull", "-q", "data.dvc")
    _run(dest, "dvc", "repro")
    yield dest


def test_pull_restores_the_data_set(project: Path, shared_dir: Path) -> None:
    for name in ("train_catvnoncat.h5", "test_catvnoncat.h5"):
        pulled = (project / "data" / name).read_bytes()
        assert pulled == (shared_dir / "datasets/catvnoncat" / name).read_bytes()


def test_repro_writes_metrics_with_useful_accuracy(project: Path) -> None:
    metrics = json.loads((project / "metrics.json").read_text())
    for split in ("train", "test"):
        assert set(metrics[split]) == {
            "accuracy",
            "balanced_accuracy",
            "precision",
            "recall",
            "f1",
            "roc_auc",
            "log_loss",
        }
    assert metrics["test"]["accuracy"] >= 0.7
    assert (
        metrics["model"]["threshold"]
        == yaml.safe_load((project / "params.yaml").read_text())["model"]["threshold"]
    )  # evaluate scored at the model's own threshold
    shown = json.loads(_run(project, "dvc", "metrics", "show", "--json").stdout)
    assert shown  # DVC itself can read what the stages wrote
    flat = json.dumps(shown)
    assert '"accuracy"' in flat and '"roc_auc"' in flat


def test_stage_outputs_exist(project: Path) -> None:
    assert (project / "model" / "model.json").exists()
    assert list((project / "model").glob("weights-*.npz"))
    for png in (
        "roc.png",
        "confusion.png",
        "misclassified.png",
        "insight_layers.png",
        "insight_perceptrons.png",
    ):
        assert (project / "eval" / png).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((project / "prepared" / "summary.json").read_text())
    assert summary["train_test_duplicates"], "prepare must report the train/test duplicate"
    assert (project / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").exists()


def test_second_repro_runs_nothing(project: Path) -> None:
    out = _run(project, "dvc", "repro").stdout
    assert "Running stage" not in out
    assert "up to date" in out


def test_evaluate_only_param_reruns_only_evaluate(project: Path) -> None:
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["evaluate"]["gallery_size"] = 4
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = _run(project, "dvc", "repro").stdout
        assert "Running stage 'evaluate'" in out
        assert "Running stage 'train'" not in out and "Running stage 'prepare'" not in out
    finally:
        params_path.write_text(original)
        _run(project, "dvc", "repro")


KEPT = ("model", "insight", "eval", "metrics.json")  # what a failed run must leave as it was


@pytest.mark.parametrize(
    ("key", "typo"), [("optimizer:", "train.optmizer"), ("val_fraction:", "prepare.val_fractoin")]
)
def test_bad_param_fails_before_any_work(project: Path, key: str, typo: str) -> None:
    params_path = project / "params.yaml"
    original = params_path.read_text()
    before = saved_outputs(project, *KEPT, "dvclive", "prepared")
    params_path.write_text(original.replace(key, typo.split(".")[1] + ":", 1))
    try:
        proc = _run(project, "dvc", "repro", check=False)
        assert proc.returncode != 0
        assert f"unknown key {typo}" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        # DVC deleted none of it either (dvc.yaml: persist)
        assert saved_outputs(project, *KEPT, "dvclive", "prepared") == before
    finally:
        params_path.write_text(original)


def test_a_diverging_repro_keeps_the_last_model_metrics_and_pictures(project: Path) -> None:
    """The stage saves no model from a run whose cost turned NaN, and DVC (persist) does
    not delete the last one before running it: `itsacat predict` still works after."""
    params_path = project / "params.yaml"
    original = params_path.read_text()
    before = saved_outputs(project, *KEPT)
    params = yaml.safe_load(original)
    params["train"]["learning_rate"] = 1.0e9
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        proc = _run(project, "dvc", "repro", check=False)
        assert proc.returncode != 0
        assert "training diverged" in proc.stdout + proc.stderr
        assert saved_outputs(project, *KEPT) == before
    finally:
        params_path.write_text(original)
        _run(project, "dvc", "repro")


def test_experiment_with_set_param(project: Path) -> None:
    """1e-5, which DVC writes into params.yaml as `1e-05` (text to YAML 1.1): it must train."""
    _run(
        project,
        "dvc",
        "exp",
        "run",
        "-S",
        "train.learning_rate=1e-5",
        "-S",
        "train.epochs=60",
        "-n",
        "quick-lr",
    )
    shown = json.loads(_run(project, "dvc", "exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert "quick-lr" in text and "1e-05" in text


def test_plots_show_renders(project: Path) -> None:
    _run(project, "dvc", "plots", "show", "-o", "dvc_plots")
    html = (project / "dvc_plots" / "index.html").read_text()
    assert "ROC" in html and "Confusion" in html


def test_cli_predict_inspect_explain_on_pipeline_model(project: Path, photos: list[Path]) -> None:
    out = _run(project, "itsacat", "predict", "--json", *map(str, photos)).stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(photos)
    for row in rows:
        assert row["label"] in ("cat", "non-cat") and 0 <= row["probability"] <= 1
    table = _run(project, "itsacat", "inspect").stdout
    assert "dead_fraction" in table and len(table.splitlines()) >= 6  # header, rule, 4 layers
    units = _run(project, "itsacat", "inspect", "--layer", "2").stdout
    assert len(units.splitlines()) == 3 + 7  # title, header, rule, 7 perceptrons
    explained = _run(project, "itsacat", "explain", str(photos[0])).stdout
    assert "layer 1 (relu, 20 perceptrons" in explained and "verdict:" in explained


def test_dvc_yaml_deps_list_every_module_each_stage_imports(project: Path) -> None:
    """Run each stage, record the itsacat modules it loaded, compare with its deps."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["train"]["epochs"] = 3  # the probe needs the imports, not a good model
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    probe = (  # the stage's own file, plus every itsacat module loaded when it exits
        "import atexit, importlib.util, json, runpy, sys\n"
        "me = importlib.util.find_spec(sys.argv[1]).origin\n"
        "atexit.register(lambda: print('MODULES=' + json.dumps(sorted({me, *("
        "getattr(m, '__file__', None) or '' for n, m in list(sys.modules.items())"
        " if n.startswith('itsacat'))}))))\n"
        "runpy.run_module(sys.argv[1], run_name='__main__')\n"
    )
    outputs = {}
    try:
        for name, stage in stages.items():
            outputs[name] = _run(project, "python", "-c", probe, stage["cmd"].split()[-1]).stdout
    finally:
        params_path.write_text(original)
        _run(project, "dvc", "repro")  # back to the real outputs (from DVC's run cache)
    for name, stage in stages.items():
        module = stage["cmd"].split()[-1]
        out = outputs[name]
        files = json.loads(out.split("MODULES=")[-1])
        # the package may be imported from the editable install, not the clone: compare
        # paths from src/ on
        imported = {f[f.rindex("/src/itsacat/") + 1 :] for f in files if "/src/itsacat/" in f}
        assert any(p.endswith(module.replace(".", "/") + ".py") for p in imported)
        missing = {p for p in imported if not p.endswith("__init__.py")} - set(stage["deps"])
        assert not missing, f"stage {name} imports {sorted(missing)} not in its deps"


def test_ctrl_c_during_dvc_repro_and_the_next_repro_ends_with_the_same_model(
    project: Path, repo_root: Path
) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while `dvc repro -f
    train` trains: DVC reports the stage failed, the stage has saved its state; the next
    `dvc repro -f train` resumes and writes the model an uninterrupted repro wrote."""
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params_path.write_text((repo_root / "params.yaml").read_text())  # the defaults
    _run(project, "dvc", "repro")  # the uninterrupted model (the module's first repro's)
    first = json.loads((project / "model" / "model.json").read_text())["version"]
    model = saved_outputs(project, "model")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    status, out = signal_when(
        ["dvc", "repro", "-f", "train"], "epoch 500: loss", signal.SIGINT, project, env, group=True
    )
    try:
        assert status != 0, out
        assert "saved the training after epoch" in out, out
        assert (project / ".itsacat" / "checkpoints" / "train.npz").exists()
        assert saved_outputs(project, "model") == model  # not deleted by DVC before the run
        again = _run(project, "dvc", "repro", "-f", "train")
        log = again.stdout + again.stderr
        assert "resuming after epoch" in log, log
        assert json.loads((project / "model" / "model.json").read_text())["version"] == first
        assert not (project / ".itsacat" / "checkpoints" / "train.npz").exists()
    finally:
        params_path.write_text(original)
        _run(project, "dvc", "repro")
