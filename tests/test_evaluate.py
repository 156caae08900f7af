"""The evaluate stage on a tiny project: what it measures, and outputs it cannot write."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from itsacat.config import EvaluateParams, TrainParams
from itsacat.data import N_X, Dataset, save_split
from itsacat.errors import ItsacatError
from itsacat.insight import InsightRecorder
from itsacat.network import init_network
from itsacat.stages import evaluate as stage
from itsacat.stages._common import run_stage
from itsacat.training import fit

PARAMS = EvaluateParams(gallery_size=2)


@pytest.fixture
def project(tmp_path: Path, model_factory: Callable[..., Path]) -> stage.Paths:
    """prepared/ with 6 random photos per split, an untrained model, an empty insight/."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        images = rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
        save_split(tmp_path / "prepared" / f"{split}.npz", Dataset(images, np.tile([0, 1], 3)))
    model_factory(tmp_path / "model")
    InsightRecorder().save(tmp_path / "insight")
    return stage.Paths(
        prepared=tmp_path / "prepared",
        model=tmp_path / "model",
        insight=tmp_path / "insight",
        metrics=tmp_path / "metrics.json",
        out=tmp_path / "eval",
    )


def test_model_size_is_the_weights_file_model_json_names(project: stage.Paths) -> None:
    spec = json.loads((project.model / "model.json").read_text())
    named = project.model / spec["weights_file"]
    for stale in ("0", "1", "2", "a", "f"):  # left by saves interrupted before the cleanup
        (project.model / f"weights-{stale * 16}.npz").write_bytes(b"x" * 10)
    metrics = stage.evaluate(PARAMS, project)
    assert metrics["model"]["size_bytes"] == named.stat().st_size > 10
    assert json.loads(project.metrics.read_text()) == metrics


def _eval_a_file(paths: stage.Paths) -> None:
    paths.out.write_text("not a folder")


def _plots_a_file(paths: stage.Paths) -> None:
    paths.out.mkdir()
    (paths.out / "plots").write_text("not a folder")


def _eval_read_only(paths: stage.Paths) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    paths.out.mkdir(mode=0o500)


@pytest.mark.parametrize("block", [_eval_a_file, _plots_a_file, _eval_read_only])
def test_unwritable_outputs_fail_before_metrics_json_changes(
    project: stage.Paths,
    capsys: pytest.CaptureFixture[str],
    block: Callable[[stage.Paths], None],
) -> None:
    project.metrics.write_text('{"test": {"accuracy": 0.75}}\n')  # the last run's
    block(project)
    with pytest.raises(ItsacatError, match="eval"):
        stage.evaluate(PARAMS, project)
    assert run_stage(lambda: stage.evaluate(PARAMS, project)) == 1
    err = capsys.readouterr().err
    assert err.startswith("itsacat: error: ") and err.count("\n") == 1, err
    assert project.metrics.read_text() == '{"test": {"accuracy": 0.75}}\n'


def test_the_pictures_show_where_the_model_decides(
    project: stage.Paths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ROC marks the operating point at the model's threshold; the confusion matrix and the
    gallery of mistakes say which threshold made them."""
    from itsacat import plots

    figures: dict[str, object] = {}
    save = plots._save

    def keep(fig: object, path: str | Path) -> None:
        figures[Path(path).name] = fig
        save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    stage.evaluate(PARAMS, project)
    rows = json.loads((project.out / "predictions.json").read_text())
    y = np.array([r["label"] for r in rows])
    called = np.array([r["probability"] >= 0.5 for r in rows])  # the tiny model's threshold
    tpr, fpr = called[y == 1].mean(), called[y == 0].mean()

    ax = figures["roc.png"].axes[0]  # type: ignore[attr-defined]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[1] == f"a cat from 0.5: TPR {tpr:.2f}, FPR {fpr:.2f}"
    point = ax.get_lines()[1]
    assert (list(point.get_xdata()), list(point.get_ydata())) == ([fpr], [tpr])
    confusion_ax = figures["confusion.png"].axes[0]  # type: ignore[attr-defined]
    assert confusion_ax.get_title() == "confusion (test, cat from 0.5)"
    title = figures["misclassified.png"]._suptitle.get_text()  # type: ignore[attr-defined]
    shown = min(int((called != (y == 1)).sum()), PARAMS.gallery_size)
    assert title == f"misclassified test photos ({shown} shown; a cat from P(cat) 0.5)"


def test_a_training_without_insight_leaves_no_older_insight_pictures(project: stage.Paths) -> None:
    """eval/ persists between runs (dvc.yaml), so pictures of an older training's insight
    must go when the new training recorded none (train.insight_every: 0)."""
    recorder = InsightRecorder()
    net = init_network([N_X, 4, 3, 1], "relu", "he", np.random.default_rng(0), "float32")
    X = np.random.default_rng(1).random((N_X, 8), dtype=np.float32)
    Y = (np.arange(8) % 2).reshape(1, -1).astype(np.float32)
    params = TrainParams(epochs=2, insight_every=1, class_weight="none", l2=0.0)
    fit(net, X, Y, params, np.random.default_rng(2), on_insight=recorder)
    recorder.save(project.insight)
    stage.evaluate(PARAMS, project)
    drawn = {p.name for p in project.out.glob("insight_*.png")}
    assert drawn == {"insight_layers.png", "insight_perceptrons.png"}
    InsightRecorder().save(project.insight)  # the next training recorded nothing
    stage.evaluate(PARAMS, project)
    assert not list(project.out.glob("insight_*.png"))
    assert (project.out / "roc.png").exists()
