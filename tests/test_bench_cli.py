"""The bench scripts meet a user's mistake as the CLI does: one line, never a traceback.

A bad value in the params, a missing data set or a missing `bench` package prints one
`itsacat: error: …` line and exits 1 (the CLI's `run_stage`); a malformed option is
refused by argparse (its usage, then one `SCRIPT: error: …` line, exit 2); Ctrl-C prints
one line and exits 130. Every mistake here is caught before training, so each test takes
about as long as the script's imports.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from signals import signal_when

# one fit that takes seconds, so Ctrl-C lands inside it (the classic: 2,500 full-batch epochs)
SLOW_CANDIDATE = "classic (raw, Xavier, gd 0.0075)"

# Runs a bench script with one module made absent, as if its package were not installed:
# a finder ahead of all others refuses the module as importlib does when no finder has it.
# The script itself runs unchanged (runpy, as `python bench/X.py` runs it).
WITHOUT = """
import importlib.abc, runpy, sys

absent, script = sys.argv[1:3]

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == absent:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def bench(repo_root: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, f"bench/{script}", *args],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The run failed with status 1 and said why in one `itsacat: error: …` line alone."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("itsacat: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr.rstrip("\n")


def usage_error_line(proc: subprocess.CompletedProcess[str], script: str) -> str:
    """argparse refused an option: its usage, then one `SCRIPT: error: …` line, status 2."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"usage: {script}"), proc.stderr
    assert [line for line in lines if ": error: " in line] == lines[-1:], proc.stderr
    assert lines[-1].startswith(f"{script}: error: "), proc.stderr
    assert proc.stdout == "", proc.stdout
    return lines[-1]


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("train.learning_rat=0.01", "unknown key train.learning_rat (command line)"),
        ("train.learning_rate=-1", "train.learning_rate must be > 0, got -1.0 (command line)"),
        ("trian.epochs=10", "unknown section 'trian' (command line)"),
    ],
)
def test_seeds_bad_override_is_one_line(repo_root: Path, option: str, says: str) -> None:
    line = one_error_line(bench(repo_root, "seeds.py", "-S", option))
    assert says in line, line


@pytest.mark.parametrize("option", ["foo", "foo=1", "train.epochs", ".epochs=1", "train.=1"])
def test_seeds_malformed_override_names_the_form(repo_root: Path, option: str) -> None:
    line = usage_error_line(bench(repo_root, "seeds.py", "-S", option), "seeds.py")
    assert "-S takes section.key=value" in line and repr(option) in line, line


def test_seeds_override_value_not_yaml(repo_root: Path) -> None:
    line = usage_error_line(bench(repo_root, "seeds.py", "-S", "model.hidden=[4, 3"), "seeds.py")
    assert "'[4, 3' is not a YAML value" in line, line


@pytest.mark.parametrize(("option", "value"), [("--seeds", "0"), ("--seeds", "-2")])
def test_seeds_needs_a_seed(repo_root: Path, option: str, value: str) -> None:
    line = usage_error_line(bench(repo_root, "seeds.py", option, value), "seeds.py")
    assert line.endswith(f"--seeds must be at least 1, got {value}"), line


def test_seeds_start_is_not_negative(repo_root: Path) -> None:
    line = usage_error_line(bench(repo_root, "seeds.py", "--start", "-1"), "seeds.py")
    assert "--start must be 0 or more" in line, line


@pytest.mark.parametrize("script", ["seeds.py", "select_defaults.py", "train_speed.py"])
def test_missing_data_is_one_line(repo_root: Path, tmp_path: Path, script: str) -> None:
    nope = tmp_path / "nope"
    # train_speed --gpu-only needs no bench extra, which `make test` does not install
    extra = ["--gpu-only"] if script == "train_speed.py" else []
    line = one_error_line(bench(repo_root, script, "--data", str(nope), *extra))
    assert line == (
        f"itsacat: error: {nope}/train_catvnoncat.h5 does not exist; "
        "run `dvc pull` to fetch the data set"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seeds", "0"], "--seeds must be at least 1, got 0"),
        (["--folds", "0"], "--folds must be at least 2"),
        (["--folds", "1"], "--folds must be at least 2"),
        (["--seed-start", "-1"], "--seed-start must be 0 or more"),
        (["--only", "no such candidate"], "--only 'no such candidate' matches no candidate"),
        (["--only", "classic", "--exact"], "--only 'classic' matches no candidate exactly"),
    ],
)
def test_select_defaults_bad_option(repo_root: Path, args: list[str], says: str) -> None:
    # --only names one candidate: an option let through costs its fits, not all 70 candidates'
    if "--only" not in args:
        args = [*args, "--only", SLOW_CANDIDATE, "--exact"]
    line = usage_error_line(bench(repo_root, "select_defaults.py", *args), "select_defaults.py")
    assert says in line, line


def test_select_defaults_needs_both_classes_in_every_fold(repo_root: Path) -> None:
    """More folds than cats left folds without one, and their scores NaN, without a word."""
    proc = bench(repo_root, "select_defaults.py", "--folds", "80", "--only", SLOW_CANDIDATE)
    line = one_error_line(proc)
    assert "--folds 80 is more than the 72 cats among the training photos" in line, line
    assert "use --folds 72 or fewer" in line


def test_select_defaults_bad_params_is_one_line(
    repo_root: Path, tmp_path: Path, shared_dir: Path
) -> None:
    """The candidates are overrides on params.yaml, read beside the script's bench/ folder:
    a copy of the script beside a bad one meets it as the real one would."""
    (tmp_path / "bench").mkdir()
    shutil.copy(repo_root / "bench/select_defaults.py", tmp_path / "bench")
    (tmp_path / "params.yaml").write_text("train:\n  learning_rat: 0.01\n")
    data = shared_dir / "datasets" / "catvnoncat"
    line = one_error_line(bench(tmp_path, "select_defaults.py", "--data", str(data)))
    assert "unknown key train.learning_rat (" in line, line


@pytest.mark.parametrize(
    ("module", "package"), [("sklearn", "scikit-learn"), ("threadpoolctl", "threadpoolctl")]
)
def test_train_speed_without_bench_extra(repo_root: Path, module: str, package: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WITHOUT, module, "bench/train_speed.py"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = one_error_line(proc)
    assert line == (
        f"itsacat: error: {package} is not installed: run `make bench`, "
        "or pip install -e '.[bench]'"
    )
    assert proc.stdout == "", "the header came before the error"


def test_train_speed_needs_a_run(repo_root: Path) -> None:
    line = usage_error_line(bench(repo_root, "train_speed.py", "--repeat", "0"), "train_speed.py")
    assert line.endswith("--repeat must be at least 1, got 0"), line


@pytest.mark.parametrize(
    ("script", "args", "marker"),
    [
        ("seeds.py", ["--seeds", "1"], "settings:"),
        ("select_defaults.py", ["--only", SLOW_CANDIDATE, "--exact", "--seeds", "1"], " fits"),
    ],
)
def test_ctrl_c_is_one_line(repo_root: Path, script: str, args: list[str], marker: str) -> None:
    """SIGINT once the script has said what it will train: it is in the first fit then."""
    status, output = signal_when(
        [sys.executable, f"bench/{script}", *args], marker, signal.SIGINT, repo_root, timeout=60
    )
    assert "Traceback" not in output, output
    assert status == 130, output
    said = [line for line in output.splitlines() if line.startswith("itsacat:")]
    assert said == ["itsacat: interrupted; outputs already written are intact"], output
    assert output.splitlines()[-1] == said[0], output
