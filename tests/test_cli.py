"""`itsacat` and the stages at their edge: any failure is one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from itsacat import cli
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
