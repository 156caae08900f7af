"""`itsacat tune`: the points, the SageMaker request, a tuning job on moto (extended to run
its training jobs), and a real DVC experiment queue over the real data set: a point that
fails, Ctrl-C while queueing and while running, and a queue that is not empty."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from itsacat.aws.tuning import (
    Row,
    experiments_from_show,
    markdown,
    parameter_ranges,
    points,
    queue_status_from_text,
    rank,
    tune_sagemaker,
    tuning_request,
)
from itsacat.cli import main as cli_main
from itsacat.config import Params, TuneParams, TuneRange, params_from_dict
from itsacat.errors import AWSError, ConfigError
from signals import signal_when

from .conftest import ROLE, Tuning, sh, venv_env

LR_LOG = TuneRange(low=0.001, high=0.1, scale="log")


def test_grid_points_cover_every_combination() -> None:
    tune = TuneParams(
        strategy="grid",
        grid_steps=3,
        max_points=18,
        ranges={
            "train.learning_rate": LR_LOG,
            "train.epochs": TuneRange(low=10, high=30),
            "model.hidden": TuneRange(values=("[4]", "[8, 4]")),
        },
    )
    pts = points(tune)
    assert len(pts) == 3 * 3 * 2
    assert {p["train.learning_rate"] for p in pts} == {"0.001", "0.01", "0.1"}
    assert {p["train.epochs"] for p in pts} == {"10", "20", "30"}
    assert len({tuple(sorted(p.items())) for p in pts}) == 18


def test_grid_larger_than_max_points_is_refused() -> None:
    tune = TuneParams(strategy="grid", grid_steps=5, max_points=4, ranges={"train.l2": LR_LOG})
    with pytest.raises(ConfigError, match=r"grid has 5 points, more than tune.max_points \(4\)"):
        points(tune)


def test_random_points_are_seeded_and_inside_the_ranges() -> None:
    ranges = {"train.learning_rate": LR_LOG, "train.batch_size": TuneRange(low=8, high=64)}
    tune = TuneParams(strategy="random", max_points=20, seed=3, ranges=ranges)
    pts = points(tune)
    assert pts == points(tune) != points(TuneParams(max_points=20, seed=4, ranges=ranges))
    lrs = [float(p["train.learning_rate"]) for p in pts]
    assert all(0.001 <= lr <= 0.1 for lr in lrs)
    # log scale: about half the points below the geometric middle 0.01
    assert 5 <= sum(lr < 0.01 for lr in lrs) <= 15
    assert all(8 <= int(p["train.batch_size"]) <= 64 for p in pts)


def test_ranking_and_table() -> None:
    rows = [
        Row("a", {"train.l2": "0.1"}, 0.7, {"train/loss": 0.5}),
        Row("b", {"train.l2": "0.2"}, None, {}, status="failed"),
        Row("c", {"train.l2": "0.3"}, 0.9, {"train/loss": 0.4}),
    ]
    assert [r.name for r in rank(rows, "maximize")] == ["c", "a", "b"]
    assert [r.name for r in rank(rows, "minimize")] == ["a", "c", "b"]
    table = markdown(rows, "val/accuracy", "maximize").splitlines()
    assert table[0] == "| rank | experiment | train.l2 | val/accuracy (maximize) | train/loss |"
    assert table[2] == "| 1 | c | 0.3 | 0.9 | 0.4 |"
    assert table[4] == "| 3 | b | 0.2 | failed |  |"


def test_sagemaker_ranges_match_the_local_points() -> None:
    ranges = {"train.learning_rate": LR_LOG, "model.hidden": TuneRange(values=("[4]", "[8]"))}
    random = parameter_ranges(TuneParams(strategy="random", ranges=ranges))
    assert random["ContinuousParameterRanges"] == [
        {
            "Name": "train.learning_rate",
            "MinValue": "0.001",
            "MaxValue": "0.1",
            "ScalingType": "Logarithmic",
        }
    ]
    assert random["CategoricalParameterRanges"] == [
        {"Name": "model.hidden", "Values": ["[4]", "[8]"]}
    ]
    grid = TuneParams(strategy="grid", grid_steps=3, ranges=ranges)
    cats = {c["Name"]: c["Values"] for c in parameter_ranges(grid)["CategoricalParameterRanges"]}
    local = points(grid)
    assert math.prod(len(v) for v in cats.values()) == len(local)
    assert {p["train.learning_rate"] for p in local} == set(cats["train.learning_rate"])


def test_objective_needs_a_validation_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump({"tune": {"ranges": {"train.l2": {"values": ["0.0", "0.1"]}}}})
    )
    assert cli_main(["tune", "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert "tune.objective val/accuracy is a validation metric" in err
    assert "--set prepare.val_fraction=0.2" in err


# What `dvc exp show --json` (DVC 3) says of two queued experiments whose baseline has train
# metrics: `good` succeeded, `bad` failed in the train stage, and is shown with the files of
# the commit it started from, so with its baseline's metrics.
BASELINE_METRICS = {"train": {"loss": 0.0001, "accuracy": 1.0}, "step": 1}
SHOW = [
    {"rev": "workspace", "name": None, "data": {"metrics": {}}, "experiments": None},
    {
        "rev": "9d776a2a019afb0f87417768ac85a9960e24eb52",
        "name": "main",
        "data": {"metrics": {"dvclive/metrics.json": {"data": BASELINE_METRICS}}},
        "experiments": [
            {
                "revs": [
                    {
                        "rev": "d7f9eeaf13662a22653ea132e7130373304890cd",
                        "name": "good",
                        "data": {
                            "metrics": {
                                "dvclive/metrics.json": {
                                    "data": {"train": {"loss": 0.68, "accuracy": 0.35}}
                                }
                            }
                        },
                        "error": None,
                        "experiments": None,
                    }
                ],
                "executor": {"state": "success", "name": "dvc-task", "local": {}},
                "name": "good",
            },
            {
                "revs": [
                    {
                        "rev": "3565f9720a833d4b6218f8a9c231788a3a6363e9",
                        "name": "bad",
                        "data": {"metrics": {"dvclive/metrics.json": {"data": BASELINE_METRICS}}},
                        "error": {"msg": "Experiment run failed", "type": ""},
                        "experiments": None,
                    }
                ],
                "executor": {"state": "failed", "name": None, "local": {"returncode": 255}},
                "name": "bad",
            },
        ],
    },
]


def test_a_failed_experiment_gets_no_metrics_from_its_baseline() -> None:
    found = experiments_from_show(SHOW)
    assert set(found) == {"good", "bad"}
    assert (found["good"].state, found["good"].metrics["train/loss"]) == ("success", 0.68)
    assert (found["bad"].state, found["bad"].metrics) == ("failed", {})


def test_queue_status_is_read_from_dvcs_table() -> None:
    text = (
        "Task     Name          Created       Status\n"
        "75ff243  tune-0-0      10:02 AM      Running\n"
        "4cb2a70                Nov 25, 2026  Queued\n"
        "3565f97  bad           Nov 25, 2026  Failed\n"
        "3502e8b  good          10:00 AM      Success\n"
        "\n"
        "Worker status: 1 active, 1 idle\n"
    )
    status = queue_status_from_text(text)
    assert status.tasks == {
        "tune-0-0": "Running",
        "4cb2a70": "Queued",  # unnamed: its task id, which `dvc queue remove` takes too
        "bad": "Failed",
        "good": "Success",
    }
    assert status.workers == 2
    assert queue_status_from_text("No experiment tasks in the queue.\n").tasks == {}


def _tune_cli(
    tmp_path: Path, raw: dict[str, Any], *args: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, list[list[str]]]:
    """`itsacat tune` over params `raw` with DVC replaced by a recorder; → (exit status, the
    DVC commands it ran). Its `dvc queue status` says the queue is empty."""
    import itsacat.aws.tuning as tuning

    ran: list[list[str]] = []

    def dvc(cmd: list[str], root: Path, what: str) -> str:
        ran.append(cmd)
        if cmd[:2] != ["queue", "status"]:
            raise AssertionError(f"ran `dvc {' '.join(cmd)}` before refusing")
        return "No experiment tasks in the queue.\n\nWorker status: 0 active, 0 idle\n"

    monkeypatch.setattr(tuning, "_dvc", dvc)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    status = cli_main(["tune", "--params", str(params), *args])
    return status, ran


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        (
            {"train.learning_rate": {"low": -0.01, "high": 0.03}},
            "train.learning_rate must be > 0, got -0.01 (tune.ranges.train.learning_rate.low",
        ),
        (
            {"train.dropout": {"low": 0.5, "high": 1.5}},
            "train.dropout must be in [0, 1), got 1.5 (tune.ranges.train.dropout.high",
        ),
        (
            {"train.epochs": {"values": []}},
            "tune.ranges.train.epochs.values is empty; list the values to try as YAML text, "
            'e.g. values: ["2500"]',
        ),
        (
            {"train.epochs": {"values": [50, "60"]}},
            'tune.ranges.train.epochs.values must be a string, got the number 50; quote it: "50"',
        ),
    ],
    ids=["low", "high", "empty-values", "unquoted-number"],
)
def test_a_range_outside_its_keys_limits_is_one_line_before_any_work(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ranges: dict[str, Any],
    message: str,
) -> None:
    """{low: -0.01, high: 0.03} queued and trained every point; an empty values list was
    told to list values."""
    raw = {"prepare": {"val_fraction": 0.2}, "tune": {"ranges": ranges}}
    status, ran = _tune_cli(tmp_path, raw, monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert message in err
    assert ran == []


def test_every_point_is_checked_whole_before_anything_is_queued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each value passes alone (params.yaml loads), but cupy on a CPU instance does not."""
    raw = {
        "prepare": {"val_fraction": 0.2},
        "train": {"compute": "sagemaker"},
        "aws": {"instance_type": "ml.m5.large"},
        "tune": {"strategy": "grid", "ranges": {"train.backend": {"values": ["numpy", "cupy"]}}},
    }
    status, ran = _tune_cli(tmp_path, raw, monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert "aws.instance_type must be an NVIDIA GPU instance" in err
    assert "got 'ml.m5.large' (tune.ranges.train.backend: cupy)" in err
    assert ran == []


def test_an_objective_the_train_stage_never_logs_is_refused() -> None:
    """val/acc passed the old pattern: three experiments trained, then `no experiment
    reported val/acc`."""
    with pytest.raises(ConfigError) as caught:
        TuneParams(objective="val/acc").check("params.yaml")
    assert str(caught.value) == (
        "tune.objective must be one of the metrics the train stage logs: train/loss, "
        "train/accuracy, val/loss, val/accuracy, got 'val/acc' (params.yaml)"
    )
    for objective in TuneParams.OBJECTIVES:
        TuneParams(objective=objective).check("params.yaml")


def test_a_bad_set_value_is_named_as_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, ran = _tune_cli(tmp_path, {}, "--set", "train.epochs=abc", monkeypatch=monkeypatch)
    err = capsys.readouterr().err
    assert status == 1 and ran == []
    assert err == "itsacat: error: train.epochs must be a whole number, got 'abc' (--set)\n"


def test_the_best_line_names_the_exact_apply_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It printed `= 0.34146341463414637` and `dvc exp apply NAME`."""
    import itsacat.aws.tuning as tuning

    rows = [
        Row("tune-1126-100841-0", {"train.l2": "0.1"}, None, {}, status="failed"),
        Row("tune-1126-100841-1", {"train.l2": "0.5"}, 0.34146341463414637, {}),
    ]
    monkeypatch.setattr(tuning, "tune_local", lambda *a, **k: rows)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"prepare": {"val_fraction": 0.2}}))
    assert cli_main(["tune", "--params", str(params)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "best: tune-1126-100841-1 (val/accuracy = 0.3415); take it into the workspace "
        "with `dvc exp apply tune-1126-100841-1`"
    )


def _tune_params(bucket: str, **tune: object) -> Params:
    return params_from_dict(
        {
            "prepare": {"val_fraction": 0.25},
            "model": {"hidden": [3]},
            "train": {"epochs": 20, "log_every": 5, "insight_every": 0},
            "aws": {"role_arn": ROLE, "bucket": bucket, "poll_s": 0.01},
            "tune": {
                "backend": "sagemaker",
                "strategy": "grid",
                "parallel": 2,
                "ranges": {"train.learning_rate": {"values": ["0.05", "0.0001"]}},
                **tune,
            },
        }
    )


@pytest.mark.aws
def test_sagemaker_tuning_job_ranks_its_training_jobs(
    bucket: str, sagemaker_tunes: list[Tuning], prepared: Path
) -> None:
    params = _tune_params(bucket)
    rows = tune_sagemaker(params, prepared=prepared)

    (tuning,) = sagemaker_tunes
    assert [r.status for r in tuning.runs] == ["Completed", "Completed"], tuning.runs[0].logs
    assert tuning.config["ResourceLimits"] == {
        "MaxNumberOfTrainingJobs": 2,
        "MaxParallelTrainingJobs": 2,
    }
    # the objective each job logged, read independently of the regex SageMaker got
    logged = {}
    for run in tuning.runs:
        (value,) = re.findall(r"itsacat-metric val/accuracy=(\S+)", run.logs)
        logged[run.job.training_job_name] = float(value)
    assert {r.name: r.objective for r in rows} == logged
    assert {r.values["train.learning_rate"] for r in rows} == {"0.05", "0.0001"}
    assert rank(rows, "maximize")[0].objective == max(logged.values())


@pytest.mark.aws
def test_sagemaker_tuning_request_is_refused_cleanly(
    bucket: str, prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.models import SageMakerModelBackend

    def refuse(self: object, **kwargs: object) -> None:
        raise ValidationError(message="MaxParallelTrainingJobs exceeds your quota")

    monkeypatch.setattr(SageMakerModelBackend, "create_hyper_parameter_tuning_job", refuse)
    with pytest.raises(AWSError, match=r"exceeds your quota.*removed the \d+ uploaded"):
        tune_sagemaker(_tune_params(bucket), prepared=prepared)
    from itsacat.aws.clients import client

    assert client("s3", "us-east-1").list_objects_v2(Bucket=bucket).get("KeyCount") == 0


@pytest.mark.aws
def test_a_tuning_job_on_an_instance_type_that_never_trains_is_refused_before_uploading(
    bucket: str, prepared: Path
) -> None:
    from itsacat.aws.clients import client

    params = _tune_params(bucket)
    params = replace(params, aws=replace(params.aws, instance_type="ml.t2.medium"))
    with pytest.raises(ConfigError, match=r"'ml.t2.medium' is not an instance type SageMaker"):
        tune_sagemaker(params, prepared=prepared)
    assert client("s3", "us-east-1").list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_tuning_request_shape() -> None:
    from itsacat.aws.training import JobLocations

    params = _tune_params(
        "bkt", strategy="random", max_points=5, objective="val/loss", goal="minimize"
    )
    req = tuning_request(params, "itsacat-1", JobLocations("bkt", "itsacat/tuning/itsacat-1"))
    config = req["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Random"
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "val/loss",
    }
    static = req["TrainingJobDefinition"]["StaticHyperParameters"]
    assert "train.learning_rate" not in static and static["train.epochs"] == "20"
    regexes = {
        m["Name"]: m["Regex"]
        for m in req["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"]
    }
    assert re.search(regexes["val/loss"], "itsacat-metric val/loss=0.5321\n").group(1) == "0.5321"
    assert re.search(regexes["val/loss"], "itsacat-metric val/accuracy=0.9") is None


FAKE_LOSS = 0.0001  # a train loss no 15-epoch run reaches: the baseline's, in the tests


def _tune_project(project: Path, tune: dict[str, Any], fake_baseline: bool = False) -> Path:
    """Write `tune` into the scratch project's params.yaml and commit it. With
    `fake_baseline`, the baseline commit also gets train metrics of its own (loss
    FAKE_LOSS), as a workspace that has run the pipeline has: DVC shows a queued
    experiment that failed with its baseline's metrics."""
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["tune"] = {"backend": "local", "strategy": "grid", "parallel": 2, **tune}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    if fake_baseline:
        for folder in ("prepared", "model", "insight", "dvclive/plots/metrics"):
            (project / folder).mkdir(parents=True, exist_ok=True)
        scores = {"loss": FAKE_LOSS, "accuracy": 1.0}
        metrics = {"train": scores, "val": scores, "step": 1}
        (project / "dvclive" / "metrics.json").write_text(json.dumps(metrics))
        sh(["dvc", "commit", "-q", "-f", "train"], project)
    sh(["git", "commit", "-q", "-am", "tune"], project)
    return params_path


def _queued_or_running(project: Path) -> dict[str, str]:
    status = queue_status_from_text(sh(["dvc", "queue", "status"], project))
    return {n: s for n, s in status.tasks.items() if s in ("Queued", "Running")}


@pytest.mark.pipeline
def test_local_tuning_ranks_only_the_experiments_that_succeeded(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A point that fails in the train stage (patience without a validation set) was ranked
    first with its baseline's metrics, and the search said nothing while it ran."""
    import itsacat.aws.tuning as tuning

    monkeypatch.setenv("PATH", venv_env()["PATH"])
    monkeypatch.setattr(tuning, "POLL_S", 3.0)
    caplog.set_level("INFO", logger="itsacat")
    params_path = _tune_project(
        project,
        {
            "objective": "train/loss",
            "goal": "minimize",
            "ranges": {"prepare.val_fraction": {"values": ["0.0", "0.2"]}},
        },
        fake_baseline=True,
    )

    sets = ["--set", "train.epochs=15", "--set", "train.patience=2"]
    assert cli_main(["tune", "--params", str(params_path), *sets]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if re.match(r"^\| \d", line)]
    assert len(table) == 2, out
    rows = {}
    for line in table:
        _, rank_, name, fraction, objective, *_ = (c.strip() for c in line.split("|"))
        rows[fraction] = (rank_, name, objective)

    raw = json.loads(sh(["dvc", "exp", "show", "--json"], project))
    show = experiments_from_show(raw)
    used = {
        rev["name"]: rev["data"]["params"]["params.yaml"]["data"]["prepare"]["val_fraction"]
        for base in raw
        for exp in base.get("experiments") or []
        for rev in exp["revs"]
    }
    rank_, good, objective = rows["0.2"]
    assert (rank_, show[good].state, used[good]) == ("1", "success", 0.2)
    assert objective == f"{show[good].metrics['train/loss']:.4g}" != f"{FAKE_LOSS:.4g}"
    rank_, bad, objective = rows["0.0"]
    assert (rank_, objective, show[bad].state, used[bad]) == ("2", "failed", "failed", 0.0)
    best = f"best: {good} (train/loss = {rows['0.2'][2]}); take it into the workspace with "
    assert out.rstrip().endswith(best + f"`dvc exp apply {good}`"), out

    progress = [r.getMessage() for r in caplog.records if "finished" in r.getMessage()]
    assert progress[-1] == "tune: 2 of 2 finished (1 failed), 0 running", progress
    assert any(f"{bad} (failed)" in r.getMessage() for r in caplog.records)


def _processes_in(folder: Path) -> list[str]:
    """Processes whose working directory lies in `folder` (DVC's queue workers and the
    experiments they run work in its .dvc/tmp), other than this one."""
    found = []
    folder = folder.resolve()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, a zombie, or not ours to look at
            continue
        if cwd == folder or folder in cwd.parents:
            found.append(f"{proc.name}: {cmd}")
    return found


# The CLI in a child process, SIGINT raising KeyboardInterrupt as in a terminal whatever
# this process inherited (a job a shell starts in the background has SIGINT ignored).
CTRL_C_CLI = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from itsacat.cli import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.mark.pipeline
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc")
@pytest.mark.parametrize(
    ("when", "marker"),
    [("queueing", "(1 of 3)"), ("running", " 2 running")],
)
def test_ctrl_c_stops_the_search_and_leaves_nothing_running(
    project: Path, when: str, marker: str
) -> None:
    """Ctrl-C said `interrupted` while the queue's workers ran every experiment unseen, and
    a re-run then found DVC's lock held."""
    params_path = _tune_project(
        project, {"ranges": {"train.learning_rate": {"values": ["0.01", "0.02", "0.03"]}}}
    )
    # epochs enough that no point ends before Ctrl-C, however slow this machine is today
    sets = ["--set", "train.epochs=100000", "--set", "prepare.val_fraction=0.2"]
    args = [sys.executable, "-c", CTRL_C_CLI, "tune", "--params", str(params_path), *sets]
    try:
        status, out = signal_when(args, marker, signal.SIGINT, project, venv_env(), group=True)
    except AssertionError:  # no marker: leave no 100000-epoch experiment to the next tests
        sh(["dvc", "queue", "stop", "--kill"], project)
        sh(["dvc", "queue", "remove", "--all"], project)
        raise

    assert status == 130, out
    assert "itsacat: interrupted" in out
    (stopped,) = [line for line in out.splitlines() if line.startswith("tune: stopped")]
    if when == "running":
        assert re.search(r"killed 2 running .*removed 1 queued", stopped), stopped
    else:
        assert "removed " in stopped and "killed" not in stopped, stopped
    assert "finished before: none" in stopped
    assert not _queued_or_running(project)
    deadline = time.monotonic() + 30  # idle queue workers leave within seconds
    while (left := _processes_in(project)) and time.monotonic() < deadline:
        time.sleep(1)
    assert not left, left


@pytest.mark.pipeline
def test_a_queue_holding_other_experiments_is_refused_before_queueing(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dvc queue start` runs whatever the queue holds: a search ran the user's own queued
    experiment with its points, unannounced."""
    monkeypatch.setenv("PATH", venv_env()["PATH"])
    params_path = _tune_project(project, {"ranges": {"train.l2": {"values": ["0.5"]}}})
    sh(["dvc", "exp", "run", "--queue", "--name", "mine", "-S", "train.epochs=5"], project)

    sets = ["--set", "train.epochs=5", "--set", "prepare.val_fraction=0.2"]
    assert cli_main(["tune", "--params", str(params_path), *sets]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "already holds mine (queued)" in err and "`dvc queue remove mine`" in err
    assert _queued_or_running(project) == {"mine": "Queued"}  # untouched, and nothing added


@pytest.mark.parametrize(
    "rows",
    [[], [Row("itsacat-tune-001", {"train.l2": "0.1"}, None, {}, status="Failed")]],
    ids=["no-point", "every-point-failed"],
)
def test_a_search_where_no_point_finished_is_one_error_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    rows: list[Row],
) -> None:
    """Was an IndexError traceback (no point), or 'best: … = None' and exit 0 (all failed)."""
    import itsacat.aws.tuning as tuning

    monkeypatch.setattr(tuning, "tune_sagemaker", lambda *a, **k: rows)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tune": {"backend": "sagemaker"}}))
    assert cli_main(["tune", "--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert err.count("itsacat: error:") == 1 and "no point of the search reported" in err
