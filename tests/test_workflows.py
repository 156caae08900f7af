"""The GitHub Actions workflows and Dependabot config, checked offline.

zizmor (security audits, `--offline`) must find nothing; check-jsonschema validates every
workflow against SchemaStore's GitHub-workflow schema and dependabot.yml against the
Dependabot schema. Then our own rules: actions pinned to full commit SHAs with the version
in a comment, `permissions: {}` at the top and per-job permissions, a timeout on every job,
`persist-credentials: false`, no `pull_request_target`, no `${{ }}` inside `run:`, and a
concurrency group. Each rule is also run on a workflow that breaks it, so none can pass by
checking nothing.

    .venv/bin/pytest tests/test_workflows.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
GITHUB = REPO / ".github"
WORKFLOWS = sorted((GITHUB / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent

USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"^\s+#\s*v\d+(\.\d+)*\s*$")


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {BIN}: run `make setup` (it is in the dev extra)")
    return str(path)


def _load(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def _triggers(wf: dict[str, Any]) -> dict[str, Any]:
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return dict(on or {})


def _steps(wf: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, step) for name, job in wf["jobs"].items() for step in job.get("steps", [])]


# --- the rules: each returns the problems it finds in one workflow's text --------------------


def unpinned_uses(text: str) -> list[str]:
    """Every `uses:` is owner/repo@<40-hex commit> followed by a `# vX.Y.Z` comment."""
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        m = USES.match(line)
        if not m:
            continue
        ref, rest = m["ref"].strip("'\""), m["rest"]
        if ref.startswith("./"):
            continue  # a local action is versioned with the repository
        if not PINNED.match(ref):
            problems.append(f"line {n}: {ref} is not pinned to a full commit SHA")
        elif not VERSION_COMMENT.match(rest):
            problems.append(f"line {n}: {ref} has no `# vX.Y.Z` comment naming its version")
    return problems


def permission_problems(text: str) -> list[str]:
    """`permissions: {}` at the top; every job names the few permissions it needs."""
    wf = _load(text)
    problems = []
    if wf.get("permissions", "missing") != {}:
        problems.append(f"top-level permissions is {wf.get('permissions', 'missing')!r}, not {{}}")
    for name, job in wf["jobs"].items():
        perms = job.get("permissions")
        if not isinstance(perms, dict):
            problems.append(f"job {name}: permissions must be a mapping, got {perms!r}")
        elif any(v == "write" for k, v in perms.items() if k not in _WRITE_OK):
            problems.append(f"job {name}: write access beyond {sorted(_WRITE_OK)}: {perms}")
    return problems


# the only write scopes any job here needs: OIDC, the report comment, the deploy tag
_WRITE_OK = {"id-token", "pull-requests", "contents"}


def missing_timeouts(text: str) -> list[str]:
    wf = _load(text)
    return [
        f"job {name} has no timeout-minutes"
        for name, job in wf["jobs"].items()
        if not isinstance(job.get("timeout-minutes"), int)
    ]


def dangerous_triggers(text: str) -> list[str]:
    triggers = _triggers(_load(text))
    return [f"trigger {t}" for t in ("pull_request_target", "workflow_run") if t in triggers]


def expressions_in_run(text: str) -> list[str]:
    """No `${{ }}` inside `run:`: values reach scripts through `env:` only."""
    return [
        f"job {job}: step {step.get('name', step['run'][:40])!r} expands ${{{{ }}}} in run:"
        for job, step in _steps(_load(text))
        if "run" in step and "${{" in step["run"]
    ]


def persisted_credentials(text: str) -> list[str]:
    return [
        f"job {job}: actions/checkout without persist-credentials: false"
        for job, step in _steps(_load(text))
        if str(step.get("uses", "")).startswith("actions/checkout@")
        and step.get("with", {}).get("persist-credentials") is not False
    ]


def missing_concurrency(text: str) -> list[str]:
    wf = _load(text)
    if "concurrency" in wf:
        return []
    return [
        f"job {n} has no concurrency group" for n, j in wf["jobs"].items() if "concurrency" not in j
    ]


RULES = (
    unpinned_uses,
    permission_problems,
    missing_timeouts,
    dangerous_triggers,
    expressions_in_run,
    persisted_credentials,
    missing_concurrency,
)

GOOD = """\
name: good
on: [pull_request]
permissions: {}
concurrency: {group: good, cancel-in-progress: true}
jobs:
  build:
    runs-on: ubuntu-24.04
    timeout-minutes: 5
    permissions: {contents: read}
    env:
      TITLE: ${{ github.event.pull_request.title }}
    steps:
      - uses: actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1
        with: {persist-credentials: false}
      - run: echo "$TITLE"
"""

# (rule, a one-line edit of GOOD that breaks it)
BROKEN = [
    (unpinned_uses, ("checkout@3d3c42e5aac5ba805825da76410c181273ba90b1", "checkout@v7")),
    (unpinned_uses, (" # v7.0.1", "")),
    (permission_problems, ("permissions: {}\n", "permissions: write-all\n")),
    (permission_problems, ("permissions: {contents: read}", "permissions: {actions: write}")),
    (missing_timeouts, ("    timeout-minutes: 5\n", "")),
    (dangerous_triggers, ("on: [pull_request]", "on: [pull_request_target]")),
    (expressions_in_run, ('echo "$TITLE"', "echo ${{ github.event.pull_request.title }}")),
    (persisted_credentials, ("{persist-credentials: false}", "{fetch-depth: 0}")),
    (missing_concurrency, ("concurrency: {group: good, cancel-in-progress: true}\n", "")),
]


def test_there_are_the_four_workflows() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "pr-report.yml", "deploy.yml", "tune.yml"} <= names, names


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_workflow_follows_rule(workflow: Path, rule: Any) -> None:
    assert rule(workflow.read_text()) == []


def test_rules_pass_the_good_example() -> None:
    for rule in RULES:
        assert rule(GOOD) == [], rule.__name__


@pytest.mark.parametrize(("rule", "edit"), BROKEN, ids=lambda x: getattr(x, "__name__", ""))
def test_each_rule_catches_its_breach(rule: Any, edit: tuple[str, str]) -> None:
    old, new = edit
    assert old in GOOD
    assert rule(GOOD.replace(old, new)), f"{rule.__name__} missed: {new!r}"


def test_zizmor_offline_finds_nothing() -> None:
    proc = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", str(GITHUB)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_offline_does_audit(tmp_path: Path) -> None:
    """The same zizmor call flags a template injection and an unpinned action."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        GOOD.replace('echo "$TITLE"', "echo ${{ github.event.pull_request.title }}").replace(
            "checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1", "checkout@v7"
        )
    )
    proc = subprocess.run(
        [_tool("zizmor"), "--offline", "--no-progress", str(tmp_path / ".github")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "template-injection" in proc.stdout and "unpinned-uses" in proc.stdout, proc.stdout


def _schema(schema: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", schema, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_workflows_match_the_github_workflow_schema() -> None:
    proc = _schema("vendor.github-workflows", *WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dependabot_matches_its_schema_and_covers_actions_and_pip() -> None:
    path = GITHUB / "dependabot.yml"
    proc = _schema("vendor.dependabot", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ecosystems = {u["package-ecosystem"] for u in _load(path.read_text())["updates"]}
    assert {"github-actions", "pip"} <= ecosystems


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(GOOD.replace("runs-on: ubuntu-24.04", "runs_on: ubuntu-24.04"))
    assert _schema("vendor.github-workflows", bad).returncode != 0


def test_workflows_call_the_project_commands() -> None:
    """The commands the delivery story relies on are where the README says they are."""
    text = {p.name: p.read_text() for p in WORKFLOWS}
    assert "itsacat report --base" in text["pr-report.yml"]
    assert "dvc push -r s3 --run-cache" in text["pr-report.yml"]
    assert "cml comment update" in text["pr-report.yml"]
    assert "gh pr comment" in text["pr-report.yml"]
    assert "itsacat deploy --target sagemaker" in text["deploy.yml"]
    assert "itsacat tune" in text["tune.yml"]
    assert "make test" in text["ci.yml"]


def test_gpu_runner_is_always_stopped() -> None:
    jobs = _load((GITHUB / "workflows" / "pr-report.yml").read_text())["jobs"]
    stop = jobs["stop-gpu-runner"]
    assert stop["if"].startswith("always()")
    assert set(stop["needs"]) >= {"start-gpu-runner", "report"}
    modes = [s["with"]["mode"] for s in stop["steps"] if "ec2-github-runner" in s.get("uses", "")]
    assert modes == ["stop"]
    start = next(
        s for s in jobs["start-gpu-runner"]["steps"] if "ec2-github-runner" in s.get("uses", "")
    )
    assert "shutdown -h" in start["with"]["pre-runner-script"]  # the idle timeout


def test_deploy_is_gated_and_serialised() -> None:
    wf = _load((GITHUB / "workflows" / "deploy.yml").read_text())
    assert set(_triggers(wf)) == {"push"}
    assert wf["concurrency"]["cancel-in-progress"] is False
    job = wf["jobs"]["deploy"]
    assert job["environment"] == "production"


def test_github_folder_is_tracked_or_addable() -> None:
    """Nothing under .github is git-ignored (an ignored workflow never reaches GitHub)."""
    files = [str(p.relative_to(REPO)) for p in GITHUB.rglob("*") if p.is_file()]
    proc = subprocess.run(["git", "check-ignore", *files], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.strip() == "", proc.stdout
