"""`itsacat` and the stages at their edge: any failure is one line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from itsacat import cli
from itsacat.artifacts import load_model, save_model
from itsacat.predict import Predictor
from itsacat.stages._common import os_error_message, run_stage


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("itsacat: error: ") and err.count("\n") == 1, err
    return err.strip()


def test_run_stage_turns_a_folder_where_a_file_goes_into_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "metrics.json").mkdir()
    assert run_stage(lambda: (tmp_path / "metrics.json").write_text("{}")) == 1
    assert _one_error_line(capsys) == (
        f"itsacat: error: cannot write {tmp_path / 'metrics.json'}: Is a directory"
    )


def test_run_stage_turns_a_file_where_a_folder_goes_into_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "eval").write_text("a file")
    assert run_stage(lambda: (tmp_path / "eval").mkdir()) == 1
    assert (
        _one_error_line(capsys) == f"itsacat: error: cannot write {tmp_path / 'eval'}: File exists"
    )


def test_run_stage_turns_an_unwritable_folder_into_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp_path / "eval").mkdir(mode=0o500)
    assert run_stage(lambda: (tmp_path / "eval" / "roc.png").write_bytes(b"")) == 1
    assert _one_error_line(capsys).endswith("eval: Permission denied")


def test_run_stage_says_read_for_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_stage(lambda: (tmp_path / "nothing.npz").read_bytes()) == 1
    assert _one_error_line(capsys) == (
        f"itsacat: error: cannot read {tmp_path / 'nothing.npz'}: No such file or directory"
    )


def test_os_error_names_the_folder_of_a_file_it_could_not_create(tmp_path: Path) -> None:
    tmp = tmp_path / "eval" / ".roc.json.x1y2.tmp"  # what an atomic write's mkstemp names
    exc = PermissionError(13, "Permission denied", str(tmp))
    assert os_error_message(exc) == f"cannot write {tmp_path / 'eval'}: Permission denied"
    assert os_error_message(OSError("no file involved")) == "no file involved"


def test_main_turns_an_os_error_into_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "_cmd_inspect", lambda args: tmp_path.write_text("x"))
    assert cli.main(["inspect"]) == 1
    assert _one_error_line(capsys) == f"itsacat: error: cannot write {tmp_path}: Is a directory"


@pytest.mark.parametrize(
    "args", [["--out", "{folder}"], ["--plots-dir", "{file}"]], ids=["out-a-folder", "plots-a-file"]
)
def test_report_outputs_it_cannot_write_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("notes")
    args = [a.format(folder=tmp_path / "folder", file=tmp_path / "file") for a in args]
    assert cli.main(["report", *args]) == 1
    assert args[1] in _one_error_line(capsys)


def test_explain_names_the_photo_that_is_not_an_image(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hi\n")
    assert cli.main(["explain", str(notes), "--model-dir", str(tiny_model_dir)]) == 1
    assert _one_error_line(capsys).startswith(f"itsacat: error: {notes}: the 3 bytes are not")


def test_predict_says_the_verdict_its_probability_and_the_models_threshold(
    tiny_model_dir: Path, photos: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_model(tiny_model_dir)
    model.threshold = 0.3
    save_model(model, tmp_path / "m")
    expected = [Predictor(model).predict_bytes(p.read_bytes()) for p in photos]
    assert cli.main(["predict", *map(str, photos), "--model-dir", str(tmp_path / "m")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{photo}: {e.label} (P(cat) = {e.probability:.3f}; a cat from 0.3)"
        for photo, e in zip(photos, expected, strict=True)
    ]
    assert [e.label for e in expected] == [
        "cat" if e.probability >= 0.3 else "non-cat" for e in expected
    ]
    assert cli.main(["predict", "--json", str(photos[0]), "--model-dir", str(tmp_path / "m")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["threshold"], row["label"]) == (0.3, expected[0].label)


def test_explain_shows_every_layer_and_the_rule_of_the_verdict(
    tiny_model_dir: Path, photos: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    p = Predictor.load(tiny_model_dir).predict_bytes(photos[0].read_bytes(), trace=True)
    assert cli.main(["explain", str(photos[0]), "--model-dir", str(tiny_model_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{photos[0]} → 64×64×3 pixels → [12288, 4, 3, 1]"
    assert lines[1].startswith("layer 1 (relu, 4 perceptrons, ")
    assert lines[2].startswith("layer 2 (relu, 3 perceptrons, ")
    assert lines[3] == f"layer 3 (sigmoid output, P(cat)): {p.probability:.3f}"
    assert lines[4] == (
        f"verdict: {p.label} (P(cat) = {p.probability:.3f}; a cat from 0.5), "
        f"model {p.model_version}"
    )
    assert len(lines) == 5


def reader_gone(*args: str) -> tuple[int, str]:
    """Run `itsacat ARGS` with its stdout's reader already gone, as `| head -1` leaves it
    once it has its line: every write meets a closed pipe. → (exit status, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "itsacat.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # long before the child, still importing, writes its first line
    err = proc.stderr.read()
    return proc.wait(timeout=120), err


def test_predict_into_a_closed_pipe_exits_quietly(tiny_model_dir: Path, photos: list[Path]) -> None:
    status, err = reader_gone("predict", *map(str, photos * 3), "--model-dir", str(tiny_model_dir))
    assert (status, err) == (1, "")
