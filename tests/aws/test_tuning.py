"""`itsacat tune`: the points, the SageMaker request, a tuning job on moto (extended to run
its training jobs), and a real DVC experiment queue over the real data set."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from itsacat.aws.tuning import (
    Row,
    experiments_from_show,
    markdown,
    parameter_ranges,
    points,
    rank,
    tune_sagemaker,
    tuning_request,
)
from itsacat.cli import main as cli_main
from itsacat.config import Params, TuneParams, TuneRange, params_from_dict
from itsacat.errors import AWSError, ConfigError

from .conftest import ROLE, Tuning, sh

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


@pytest.mark.pipeline
def test_local_tuning_runs_a_dvc_experiment_queue(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import venv_env

    monkeypatch.setenv("PATH", venv_env()["PATH"])
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["tune"] = {
        "backend": "local",
        "strategy": "grid",
        "parallel": 2,
        "objective": "val/accuracy",
        "ranges": {"train.learning_rate": {"values": ["0.02", "0.0005"]}},
    }
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "commit", "-q", "-am", "tune two points"], project)

    sets = ["--set", "train.epochs=15", "--set", "prepare.val_fraction=0.2"]
    assert cli_main(["tune", "--params", str(params_path), *sets]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if re.match(r"^\| \d", line)]
    assert len(table) == 2, out

    raw = json.loads(sh(["dvc", "exp", "show", "--json"], project))
    show = experiments_from_show(raw)
    used = {
        rev["name"]: rev["data"]["params"]["params.yaml"]["data"]["train"]["learning_rate"]
        for base in raw
        for exp in base.get("experiments") or []
        for rev in exp["revs"]
    }
    for line in table:
        _, _, name, lr, objective, *_ = (c.strip() for c in line.split("|"))
        assert f"{show[name]['val/accuracy']:.4g}" == objective
        assert used[name] == float(lr)
    ranked = [float(line.split("|")[4]) for line in table]
    assert ranked == sorted(ranked, reverse=True)
    assert {line.split("|")[3].strip() for line in table} == {"0.02", "0.0005"}
    assert "dvc exp apply" in out


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
