"""`itsacat tune`: search the ranges in params.yaml `tune:`, then print the ranked table.

    itsacat tune                                  tune.backend decides where
    itsacat tune --backend local --set train.epochs=200
    itsacat tune --backend sagemaker

local: every point is checked as params.yaml is, then becomes a queued DVC experiment
(`dvc exp run --queue -S key=value …`); `dvc queue start -j tune.parallel` runs the whole
pipeline for each while `dvc queue status` is polled for progress, and the metrics the
train stage logged (dvclive) rank the experiments that succeeded (never evaluate's test
metrics; a failed one has none). Every run stays an experiment: `dvc exp apply NAME`
takes the best one into the workspace. Ctrl-C, or an error, stops this search's
experiments (queued ones removed, running ones killed) before the command ends.

sagemaker: one hyperparameter tuning job whose training jobs run the same entry point as
`train.compute: sagemaker`; the objective is read from the `itsacat-metric NAME=VALUE`
lines the entry point logs. Grid searches send the same points as the local grid.

The objective is a train or validation metric, never a test one: choosing on the test set
would make its score optimistic.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import re
import secrets
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from itsacat.config import (
    _SECTION_TYPES,
    Params,
    TuneParams,
    TuneRange,
    load_params,
)
from itsacat.errors import ConfigError, ItsacatError
from itsacat.interrupts import finishing

log = logging.getLogger(__name__)

LIVE_METRICS = "dvclive/metrics.json"  # what the train stage logs, locally and on SageMaker
SHOWN_METRICS = TuneParams.OBJECTIVES  # every metric that file holds, as tune.objective names it
TUNING_PREFIX_LIMIT = 9  # of a tuning job name's 32 characters
POLL_S = 10.0  # between `dvc queue status` polls: each costs about a second of CPU
STOP_TIMEOUT_S = 60.0  # for the killed experiments of a stopped search to end


@dataclass(frozen=True)
class Row:
    """One tried point: its name, values, objective and other metrics."""

    name: str
    values: dict[str, str]
    objective: float | None
    metrics: dict[str, float]
    status: str = "done"


def field_type(key: str) -> Any:
    section, _, name = key.partition(".")
    return typing.get_type_hints(_SECTION_TYPES[section])[name]


def _fmt(value: float, kind: Any) -> str:
    return str(round(value)) if kind is int else f"{value:.6g}"


def grid_values(key: str, rng: TuneRange, steps: int) -> list[str]:
    """The values a grid tries for one range: its `values`, or `steps` evenly spaced points."""
    import numpy as np

    if rng.values:
        return list(rng.values)
    assert rng.low is not None and rng.high is not None  # checked by TuneRange.check
    if rng.scale == "log":
        points = np.geomspace(rng.low, rng.high, steps)
    else:
        points = np.linspace(rng.low, rng.high, steps)
    kind = field_type(key)
    return list(dict.fromkeys(_fmt(float(p), kind) for p in points))


def random_value(key: str, rng: TuneRange, gen: Any) -> str:
    """One random value of a range; `gen` is a numpy Generator."""
    if rng.values:
        return rng.values[int(gen.integers(len(rng.values)))]
    assert rng.low is not None and rng.high is not None
    kind = field_type(key)
    if rng.scale == "log":
        value = math.exp(gen.uniform(math.log(rng.low), math.log(rng.high)))
    else:
        value = gen.uniform(rng.low, rng.high)
    return _fmt(value, kind)


def points(tune: TuneParams) -> list[dict[str, str]]:
    """The points to try, each {section.key: value text}: the grid, or max_points at random."""
    if not tune.ranges:
        raise ConfigError(
            "tune.ranges is empty; declare what to search in params.yaml, e.g. "
            "tune: {ranges: {train.learning_rate: {low: 0.001, high: 0.03, scale: log}}}"
        )
    keys = sorted(tune.ranges)
    if tune.strategy == "grid":
        axes = [grid_values(k, tune.ranges[k], tune.grid_steps) for k in keys]
        n = math.prod(len(a) for a in axes)
        if n > tune.max_points:
            raise ConfigError(
                f"the grid has {n} points, more than tune.max_points ({tune.max_points}); "
                "lower tune.grid_steps, drop a range, or raise tune.max_points (params.yaml)"
            )
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes)]
    import numpy as np

    gen = np.random.default_rng(tune.seed)
    out: list[dict[str, str]] = []
    for _ in range(tune.max_points):
        point = {k: random_value(k, tune.ranges[k], gen) for k in keys}
        if point not in out:
            out.append(point)
    return out


def rank(rows: Sequence[Row], goal: str) -> list[Row]:
    """Best first; points without an objective (failed) last."""
    sign = -1.0 if goal == "maximize" else 1.0
    return sorted(rows, key=lambda r: (r.objective is None, sign * (r.objective or 0.0)))


def markdown(rows: Sequence[Row], objective: str, goal: str) -> str:
    """The ranked table, as `dvc exp show --md` draws one."""
    keys = sorted({k for r in rows for k in r.values})
    extra = [m for m in SHOWN_METRICS if m != objective and any(m in r.metrics for r in rows)]
    header = ["rank", "experiment", *keys, f"{objective} ({goal})", *extra]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for i, r in enumerate(rank(rows, goal), 1):
        obj = f"{r.objective:.4g}" if r.objective is not None else r.status
        cells = [str(i), r.name, *(r.values.get(k, "") for k in keys), obj]
        cells += [f"{r.metrics[m]:.4g}" if m in r.metrics else "" for m in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_objective(
    params: Params, sets: Mapping[str, str], pts: Sequence[Mapping[str, str]]
) -> None:
    """A val/* objective needs a validation split in every point."""
    if not params.tune.objective.startswith("val/"):
        return
    for point in pts:
        text = {**sets, **point}.get("prepare.val_fraction")
        fraction = float(text) if text is not None else params.prepare.val_fraction
        if fraction <= 0:
            raise ConfigError(
                f"tune.objective {params.tune.objective} is a validation metric but "
                "prepare.val_fraction is 0; set it > 0 (e.g. 0.2) in params.yaml or pass "
                "--set prepare.val_fraction=0.2"
            )


def _point_text(point: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def check_points(params: Params, sets: Mapping[str, str], pts: Sequence[Mapping[str, str]]) -> None:
    """Every point's complete params (params.yaml, then --set, then the point) through the
    checks params.yaml gets, before any work: one value at a time first, so that the
    message names its range, then each point whole (for checks across keys)."""
    from itsacat.config import params_from_hyperparameters

    seen: set[tuple[str, str]] = set()
    for point in pts:
        for key, value in point.items():
            if (key, value) not in seen:
                seen.add((key, value))
                params_from_hyperparameters(
                    {**sets, key: value}, base=params, source=f"tune.ranges.{key}: {value}"
                )
        with_sets = " with --set " + _point_text(sets) if sets else ""
        params_from_hyperparameters(
            {**sets, **point},
            base=params,
            source=f"the tune.ranges point {_point_text(point)}{with_sets}",
        )


# ---------------------------------------------------------------- local: a DVC queue


def flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


@dataclass(frozen=True)
class Experiment:
    """One experiment of `dvc exp show --json`: DVC's state for it (success, failed,
    running or queued) and, only once it succeeded, the train stage's metrics, flattened."""

    state: str
    metrics: dict[str, float]


def experiments_from_show(show: Sequence[Mapping[str, Any]]) -> dict[str, Experiment]:
    """`dvc exp show --json` → {experiment name: its state and metrics}.

    A failed, queued or running experiment is shown with the files of the commit it started
    from, so the metrics DVC lists for it are its baseline's (or the workspace's): they are
    dropped, never read as its own.
    """
    found: dict[str, Experiment] = {}
    for baseline in show:
        for exp in baseline.get("experiments") or []:
            executor = exp.get("executor") or {}
            for rev in exp.get("revs") or []:
                name = rev.get("name") or exp.get("name")
                if not name:
                    continue
                # DVC 3: executor.state is success, queued, running or failed; an experiment
                # run outside the queue has no executor, and a failed one an `error` too
                state = "failed" if rev.get("error") else str(executor.get("state") or "success")
                data = rev.get("data") or {}
                live = (data.get("metrics") or {}).get(LIVE_METRICS, {}).get("data")
                ok = state == "success" and isinstance(live, Mapping)
                found[str(name)] = Experiment(state, flat(live) if ok else {})
    return found


QUEUE_STATES = ("Queued", "Running", "Success", "Failed")  # as `dvc queue status` writes them


@dataclass(frozen=True)
class QueueStatus:
    """`dvc queue status`: each task's state by experiment name (its task id if unnamed),
    and how many queue workers are up."""

    tasks: dict[str, str]
    workers: int

    def named(self, state: str, names: Sequence[str] | None = None) -> list[str]:
        return [n for n, s in self.tasks.items() if s == state and (names is None or n in names)]


def queue_status_from_text(text: str) -> QueueStatus:
    """Parse `dvc queue status` (DVC 3 has no --json for it): a left-aligned table of Task,
    Name, Created (`10:02 AM` or `Nov 26, 2026`) and Status, then a worker count line."""
    tasks: dict[str, str] = {}
    columns: tuple[int, int] | None = None
    workers = 0
    for line in text.splitlines():
        cells = line.split()
        if cells[:1] == ["Task"] and "Name" in cells and "Created" in cells:
            columns = (line.index("Name"), line.index("Created"))
        elif found := re.search(r"Worker status: (\d+) active, (\d+) idle", line):
            workers = int(found[1]) + int(found[2])
        elif columns and len(cells) >= 3 and cells[-1] in QUEUE_STATES:
            tasks[line[columns[0] : columns[1]].strip() or cells[0]] = cells[-1]
    return QueueStatus(tasks, workers)


def _dvc(args: Sequence[str], root: Path, what: str) -> str:
    """Run one DVC command; → its stdout. It runs in a session of its own, so that a
    terminal's Ctrl-C never cuts it off halfway through writing DVC's queue or git refs:
    on Ctrl-C it is left to end (they take seconds), then KeyboardInterrupt goes on."""
    dvc = Path(sys.executable).with_name("dvc")
    cmd = [str(dvc) if dvc.exists() else "dvc", *args]
    log.debug("$ %s", " ".join(cmd))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(
                cmd, cwd=root, stdout=out, stderr=err, text=True, start_new_session=True
            )
        except OSError as exc:
            raise ItsacatError(
                f"cannot run dvc ({exc}); install it with `pip install dvc`"
            ) from None
        try:
            returncode = proc.wait()
        except BaseException:
            with finishing(f"waiting for `dvc {' '.join(args[:2])}` to end", log):
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            raise
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise ItsacatError(f"{what} failed: {' / '.join(tail)} (`{' '.join(cmd[1:])}` in {root})")
    return stdout


def queue_status(root: Path) -> QueueStatus:
    return queue_status_from_text(_dvc(["queue", "status"], root, "dvc queue status"))


def refuse_busy_queue(status: QueueStatus) -> None:
    """The queue's workers run whatever it holds: refuse rather than run someone else's
    experiments (or a stopped search's leftovers) with this search, unannounced."""
    queued, running = status.named("Queued"), status.named("Running")
    if not queued and not running:
        return
    held = [f"{n} (queued)" for n in queued] + [f"{n} (running)" for n in running]
    clear = [f"`dvc queue remove {' '.join(queued)}`"] if queued else []
    clear += [f"`dvc queue kill {' '.join(running)}`"] if running else []
    raise ItsacatError(
        f"DVC's experiment queue already holds {', '.join(held)}, which this search would "
        f"run too; clear it with {' and '.join(clear)} (or let them finish), then tune again"
    )


def run_queue(names: Sequence[str], root: Path, parallel: int) -> None:
    """Start `parallel` queue workers and wait until every experiment of `names` has ended,
    logging a line whenever the counts change."""
    _dvc(["queue", "start", "-j", str(parallel)], root, "starting DVC's queue workers")
    started = time.monotonic()
    last: tuple[int, int, int] | None = None
    missing_before = False
    while True:
        status = queue_status(root)
        succeeded = len(status.named("Success", names))
        failed = len(status.named("Failed", names))
        running = len(status.named("Running", names))
        queued = len(status.named("Queued", names))
        if (succeeded, failed, running) != last:
            last = (succeeded, failed, running)
            log.info(
                "tune: %d of %d finished%s, %d running",
                succeeded + failed,
                len(names),
                f" ({failed} failed)" if failed else "",
                running,
            )
        if not running and not queued:
            # an experiment no longer listed at all was removed (`dvc queue remove`): sure
            # of it only when the next poll says so too
            if succeeded + failed == len(names) or missing_before:
                return
            missing_before = True
        elif queued and not status.workers and time.monotonic() - started > 3 * POLL_S:
            # the workers' idle timeout ended them before they took these: start them again
            _dvc(["queue", "start", "-j", str(parallel)], root, "restarting queue workers")
            started = time.monotonic()
        time.sleep(POLL_S)


def stop_search(names: Sequence[str], root: Path) -> None:
    """Stop what is left of a search: remove its queued experiments, kill its running ones
    (gracefully, then by force), then say in one line what was stopped and what finished."""
    removed: list[str] = []
    killed: list[str] = []
    with finishing("stopping this search's experiments", log):
        try:
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while True:
                status = queue_status(root)
                queued, running = status.named("Queued", names), status.named("Running", names)
                if not queued and not running:
                    break
                if time.monotonic() > deadline:
                    raise ItsacatError(
                        f"{', '.join(queued + running)} still in the queue after "
                        f"{STOP_TIMEOUT_S:.0f} s"
                    )
                # each can start or end between the status and these: the next round sees
                with contextlib.suppress(ItsacatError):
                    if queued:  # first, so that no worker a kill frees takes one of them
                        _dvc(["queue", "remove", *queued], root, "dvc queue remove")
                        removed += [n for n in queued if n not in removed]
                with contextlib.suppress(ItsacatError):
                    if running:
                        force = ["-f"] if any(n in killed for n in running) else []
                        _dvc(["queue", "kill", *force, *running], root, "dvc queue kill")
                        killed += [n for n in running if n not in killed]
                        time.sleep(1.0)  # a graceful kill takes a moment
        except ItsacatError as exc:
            log.warning(
                "tune: could not stop this search's experiments (%s); see `dvc queue status`",
                exc,
            )
            return
    # a killed experiment is Failed too
    finished = [n for n in status.named("Success", names) if n not in killed]
    finished += [f"{n} (failed)" for n in status.named("Failed", names) if n not in killed]
    stopped = [f"killed {len(killed)} running ({', '.join(killed)})"] if killed else []
    stopped += [f"removed {len(removed)} queued ({', '.join(removed)})"] if removed else []
    log.warning(
        "tune: stopped the search: %s; finished before: %s",
        "; ".join(stopped) or "nothing was left to stop",
        f"{', '.join(finished)} (see `dvc exp show`)" if finished else "none",
    )


def tune_local(params: Params, root: Path, sets: Mapping[str, str]) -> list[Row]:
    """Queue one DVC experiment per point, run them all, read back their metrics."""
    tune = params.tune
    pts = points(tune)
    check_objective(params, sets, pts)
    check_points(params, sets, pts)
    refuse_busy_queue(queue_status(root))
    stamp = time.strftime("%m%d-%H%M%S")
    names = [f"tune-{stamp}-{i}" for i in range(len(pts))]
    try:
        for i, (name, point) in enumerate(zip(names, pts, strict=True)):
            flags = [a for k, v in {**sets, **point}.items() for a in ("-S", f"{k}={v}")]
            _dvc(["exp", "run", "--queue", "--name", name, *flags], root, f"queueing {name}")
            log.info("tune: queued %s (%d of %d): %s", name, i + 1, len(pts), _point_text(point))
        log.info("tune: running %d experiments, %d at a time", len(names), tune.parallel)
        run_queue(names, root, tune.parallel)
    except BaseException:  # Ctrl-C or an error: leave nothing of this search running
        stop_search(names, root)
        raise
    found = experiments_from_show(json.loads(_dvc(["exp", "show", "--json"], root, "dvc exp show")))
    rows = []
    for name, point in zip(names, pts, strict=True):
        exp = found.get(name)
        if exp is None or exp.state != "success":
            rows.append(Row(name, point, None, {}, status=exp.state if exp else "missing"))
            continue
        value = exp.metrics.get(tune.objective)
        status = "done" if value is not None else f"no {tune.objective}"
        rows.append(Row(name, point, value, exp.metrics, status=status))
    failed = [r for r in rows if r.objective is None]
    if failed:
        log.warning(
            "tune: %d of %d experiments have no %s: %s; see why with `dvc queue logs %s`",
            len(failed),
            len(rows),
            tune.objective,
            ", ".join(f"{r.name} ({r.status})" for r in failed),
            failed[0].name,
        )
    return rows


# ----------------------------------------------------------- sagemaker: a tuning job


def parameter_ranges(tune: TuneParams) -> dict[str, list[dict[str, Any]]]:
    """SageMaker ParameterRanges; a grid sends every range as its grid's categorical values."""
    ranges: dict[str, list[dict[str, Any]]] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for key in sorted(tune.ranges):
        rng = tune.ranges[key]
        if tune.strategy == "grid" or rng.values:
            values = grid_values(key, rng, tune.grid_steps)
            ranges["CategoricalParameterRanges"].append({"Name": key, "Values": values})
            continue
        kind = field_type(key)
        scaling = "Logarithmic" if rng.scale == "log" else "Linear"
        entry = {"Name": key, "MinValue": _fmt(rng.low or 0.0, kind)}
        entry |= {"MaxValue": _fmt(rng.high or 0.0, kind), "ScalingType": scaling}
        group = "IntegerParameterRanges" if kind is int else "ContinuousParameterRanges"
        ranges[group].append(entry)
    return {k: v for k, v in ranges.items() if v}


def tuning_request(params: Params, name: str, where: Any) -> dict[str, Any]:
    """The CreateHyperParameterTuningJob request (pure)."""
    from itsacat.aws.sm_entry import METRIC_REGEX
    from itsacat.aws.training import hyperparameters, job_request

    tune = params.tune
    static = {k: v for k, v in hyperparameters(params).items() if k not in tune.ranges}
    job = job_request(params, name, where, static=static)
    metrics = sorted({tune.objective, *SHOWN_METRICS})
    n_jobs = len(points(tune)) if tune.strategy == "grid" else tune.max_points
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Grid" if tune.strategy == "grid" else "Random",
            "HyperParameterTuningJobObjective": {
                "Type": "Maximize" if tune.goal == "maximize" else "Minimize",
                "MetricName": tune.objective,
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": n_jobs,
                "MaxParallelTrainingJobs": tune.parallel,
            },
            "ParameterRanges": parameter_ranges(tune),
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {
                "TrainingImage": job["AlgorithmSpecification"]["TrainingImage"],
                "TrainingInputMode": "File",
                "MetricDefinitions": [
                    {"Name": m, "Regex": METRIC_REGEX.format(name=re.escape(m))} for m in metrics
                ],
            },
            "RoleArn": job["RoleArn"],
            "StaticHyperParameters": job["HyperParameters"],
            "InputDataConfig": job["InputDataConfig"],
            "OutputDataConfig": job["OutputDataConfig"],
            "ResourceConfig": job["ResourceConfig"],
            "StoppingCondition": job["StoppingCondition"],
        },
        "Tags": job["Tags"],
    }


def tuning_job_name(prefix: str) -> str:
    """A unique tuning job name, PREFIX-mmddHHMMSS-xxxx: tuning job names have at most 32
    characters (and its training jobs append -NNN-xxxxxxxx)."""
    from itsacat.aws.training import name_prefix

    stamp = time.strftime("%m%d%H%M%S", time.gmtime())
    return f"{name_prefix(prefix, TUNING_PREFIX_LIMIT)}-{stamp}-{secrets.token_hex(2)}"


def tune_sagemaker(
    params: Params,
    *,
    s3: Any = None,
    sagemaker: Any = None,
    sns: Any = None,
    prepared: Path = Path("prepared"),
    root: Path = Path(),
    sleep: Callable[[float], None] = time.sleep,
) -> list[Row]:
    """Run a SageMaker hyperparameter tuning job over tune.ranges; → its training jobs."""
    from itsacat.aws.bootstrap import resolve_bucket
    from itsacat.aws.clients import aws_errors, client
    from itsacat.aws.notify import notify
    from itsacat.aws.training import (
        JobLocations,
        check_ready,
        one_line,
        start_job,
        wait_for_job,
    )
    from itsacat.errors import AWSError

    region = params.aws.region
    check_objective(params, {}, points(params.tune))
    check_points(params, {}, points(params.tune))
    bucket = resolve_bucket(params.aws, root)
    s3 = s3 if s3 is not None else client("s3", region)
    sagemaker = sagemaker if sagemaker is not None else client("sagemaker", region)
    check_ready(params, s3, sagemaker, bucket, prepared)
    name = tuning_job_name(params.aws.prefix)
    where = JobLocations(bucket, f"{params.aws.prefix}/tuning/{name}")
    start_job(
        s3,
        where,
        prepared,
        params,
        f"tuning job {name}",
        lambda: sagemaker.create_hyper_parameter_tuning_job(**tuning_request(params, name, where)),
    )
    log.info("started SageMaker tuning job %s", name)

    def progress(desc: dict[str, Any]) -> None:
        c = desc.get("TrainingJobStatusCounters", {})
        log.info(
            "tuning job %s: %s, training jobs: %s completed, %s in progress, %s failed",
            name,
            desc["HyperParameterTuningJobStatus"],
            c.get("Completed", 0),
            c.get("InProgress", 0),
            c.get("NonRetryableError", 0) + c.get("RetryableError", 0),
        )

    desc = wait_for_job(
        sagemaker, name, params.aws.poll_s, kind="tuning", on_status=progress, sleep=sleep
    )
    if desc["HyperParameterTuningJobStatus"] != "Completed":
        raise AWSError(
            f"SageMaker tuning job {name} ended {desc['HyperParameterTuningJobStatus']}: "
            f"{one_line(desc.get('FailureReason')) or 'no reason given'}; see its training "
            "jobs' logs in CloudWatch (/aws/sagemaker/TrainingJobs) and run `itsacat tune` again"
        )
    rows = []
    with aws_errors(f"listing the training jobs of tuning job {name}", region):
        pages = sagemaker.get_paginator(
            "list_training_jobs_for_hyper_parameter_tuning_job"
        ).paginate(HyperParameterTuningJobName=name)
        for page in pages:
            for job in page["TrainingJobSummaries"]:
                final = job.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
                values = {k: str(v).strip('"') for k, v in job["TunedHyperParameters"].items()}
                value = final.get("Value")
                rows.append(
                    Row(
                        job["TrainingJobName"],
                        values,
                        float(value) if value is not None else None,
                        {},
                        status=job.get("TrainingJobStatus", "?"),
                    )
                )
    best = rank(rows, params.tune.goal)[0] if rows else None
    notify(
        "tuning_ended",
        f"tuning job {name}: best {params.tune.objective} "
        + (f"{best.objective} with {best.values}" if best else "none"),
        params.notify,
        sns=sns,
        job=name,
    )
    return rows


# ---------------------------------------------------------------- the command


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise ConfigError(f"--set takes section.key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _cmd_tune(args: argparse.Namespace) -> int:
    from itsacat.config import params_from_hyperparameters

    params = load_params(args.params)
    sets = _parse_sets(args.set or [])
    if sets:  # validate the overrides through the same dataclasses
        params = params_from_hyperparameters(sets, base=params, source="--set")
    tune = params.tune
    if args.backend:
        params = replace(params, tune=replace(tune, backend=args.backend))
    root = Path(args.params).resolve().parent
    local = params.tune.backend == "local"
    if local:
        rows = tune_local(params, root, sets)
    else:
        rows = tune_sagemaker(params, prepared=root / "prepared", root=root)
    print(markdown(rows, params.tune.objective, params.tune.goal))
    ranked = rank(rows, params.tune.goal)
    if not ranked or ranked[0].objective is None:  # failed points rank last
        raise ItsacatError(
            f"no point of the search reported {params.tune.objective} ({len(rows)} ran, "
            "none finished): see the table above and each point's log, fix the cause and "
            "tune again"
        )
    best = ranked[0]
    if local:
        hint = f"take it into the workspace with `dvc exp apply {best.name}`"
    else:
        hint = f"set {_point_text(best.values)} in params.yaml and run `dvc repro`"
    print(f"\nbest: {best.name} ({params.tune.objective} = {best.objective:.4g}); {hint}")
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tune", help="search tune.ranges (DVC experiment queue or SageMaker tuning job)"
    )
    p.add_argument("--backend", choices=("local", "sagemaker"), help="default: tune.backend")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="an override for every point, e.g. train.epochs=200 (repeatable)",
    )
    p.add_argument("--params", default="params.yaml")
    p.set_defaults(func=_cmd_tune)
