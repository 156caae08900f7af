"""Deploy to AWS Lambda: one published version per model, an alias that shifts (canary).

    deploy_lambda(Path("model"), params, clients, work_dir)

1. Build the zip (`serve.package.build_lambda_zip`: handler, package, model, numpy, Pillow)
   and, when this machine can run it (same Python and CPU as the zip's runtime), rehearse
   it: unpack it and call its handler on the smoke photos in a fresh interpreter.
2. Create the function, or update its code and configuration, then publish a version. If
   the alias already points at a version with this zip's SHA-256 (Lambda's own CodeSha256;
   the zip is byte-reproducible) and these settings, nothing changes.
3. Smoke-test the new version directly (`Qualifier=<version>`); the alias has not moved yet,
   so a failure leaves the previous version taking all traffic.
4. Shift the alias: first `canary_percent` of the traffic through its RoutingConfig, watched
   by `alarms` for `canary_wait_s`, then all of it; smoke-test through the alias. An alarm
   or a failed check moves the alias back to the previous version.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from itsacat.config import Params
from itsacat.deploy import aws_common as aws
from itsacat.deploy.common import DeployError, DeployResult, model_version
from itsacat.deploy.smoke import Invoke, SmokeCase, SmokeReport, run_smoke, select_cases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LambdaClients:
    lambda_: Any
    cloudwatch: Any


def http_event(body: bytes, content_type: str) -> dict[str, Any]:
    """A function-URL / HTTP API (payload 2.0) POST carrying a photo, as AWS sends it."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/invocations",
        "rawQueryString": "",
        "headers": {"content-type": content_type, "accept": "application/json"},
        "requestContext": {"http": {"method": "POST", "path": "/invocations"}},
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


def unwrap_http(payload: bytes) -> bytes:
    """The HTTP body inside a handler's API Gateway-style answer; raises if it is not a 200."""
    try:
        answer = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"the function answered non-JSON: {payload[:80]!r}") from None
    if not isinstance(answer, dict) or "statusCode" not in answer:
        raise ValueError(f"the function's answer is not an HTTP response: {str(answer)[:80]}")
    if answer["statusCode"] != 200:
        raise ValueError(f"HTTP {answer['statusCode']}: {str(answer.get('body'))[:120]}")
    body = answer.get("body") or ""
    if answer.get("isBase64Encoded"):
        return base64.b64decode(body)
    return str(body).encode()


def _invoker(lam: Any, function: str, qualifier: str) -> Invoke:
    def invoke(body: bytes, content_type: str) -> bytes:
        answer = aws.call(
            f"invoking {function}:{qualifier}",
            lam.invoke,
            FunctionName=function,
            Qualifier=qualifier,
            Payload=json.dumps(http_event(body, content_type)).encode(),
        )
        payload = answer["Payload"].read()
        if answer.get("FunctionError"):
            raise ValueError(f"the function failed ({answer['FunctionError']}): {payload[:200]!r}")
        return unwrap_http(payload)

    return invoke


REHEARSAL = """
import json, sys
sys.path.insert(0, sys.argv[1])
from itsacat.serve.lambda_handler import handler
for line in sys.stdin:
    print(json.dumps(handler(json.loads(line), None)), flush=True)
"""


def rehearse(
    zip_path: Path, manifest: dict[str, Any], cases: list[SmokeCase], version: str
) -> SmokeReport | None:
    """Run the zip's own handler on the smoke photos in a fresh interpreter, if it can run here.

    Returns the report, or None when the zip targets another Python or CPU than this one.
    """
    here = f"python{sys.version_info.major}.{sys.version_info.minor}"
    arch = {"x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    if manifest.get("runtime") != here or manifest.get("architecture") != arch:
        log.info(
            "not rehearsing the zip here: it targets %s/%s, this is %s/%s",
            manifest.get("runtime"),
            manifest.get("architecture"),
            here,
            arch,
        )
        return None
    with tempfile.TemporaryDirectory(prefix="itsacat-lambda-") as root:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(root)
        events = "".join(
            json.dumps(http_event(c.photo.read_bytes(), c.content_type)) + "\n" for c in cases
        )
        proc = subprocess.run(
            [sys.executable, "-I", "-c", REHEARSAL, root],
            input=events.encode(),
            capture_output=True,
            cwd=root,
            timeout=300,
        )
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise DeployError(f"the Lambda zip does not run: {' | '.join(tail)}")
    answers = iter(proc.stdout.splitlines())
    return run_smoke(lambda _b, _t: unwrap_http(next(answers)), cases, version)


def _config(lam: Any, function: str) -> dict[str, Any] | None:
    return aws.find(
        f"reading function {function}", lam.get_function_configuration, FunctionName=function
    )


def _wait_ready(lam: Any, function: str, params: Params) -> dict[str, Any]:
    """Until the function is Active and its last update finished (Lambda is eventual)."""
    p = params.deploy.aws_lambda
    state = aws.poll(
        f"function {function}",
        lambda: aws.call(
            f"reading function {function}", lam.get_function_configuration, FunctionName=function
        ),
        lambda c: (
            c.get("State", "Active") != "Pending"
            and c.get("LastUpdateStatus", "Successful") != "InProgress"
        ),
        lambda c: f"{c.get('State', 'Active')}/{c.get('LastUpdateStatus', 'Successful')}",
        p.poll_s,
        p.timeout_wait_s,
    )
    if state.get("State") == "Failed" or state.get("LastUpdateStatus") == "Failed":
        reason = state.get("StateReason") or state.get("LastUpdateStatusReason") or "no reason"
        raise DeployError(f"function {function} failed to update: {reason}")
    return state


def _alias(lam: Any, function: str, alias: str) -> dict[str, Any] | None:
    return aws.find(f"reading alias {alias}", lam.get_alias, FunctionName=function, Name=alias)


def _live_matches(
    lam: Any, function: str, version: str, sha: str, settings: dict[str, Any]
) -> bool:
    """Whether published `version` already runs this zip with these settings."""
    conf = aws.call(
        f"reading {function}:{version}",
        lam.get_function_configuration,
        FunctionName=function,
        Qualifier=version,
    )
    return conf.get("CodeSha256") == sha and all(
        conf.get(k) == v for k, v in settings.items() if k != "Description"
    )


def _point_alias(
    lam: Any, function: str, alias: str, version: str, extra: dict[str, float]
) -> None:
    aws.call(
        f"moving alias {alias}",
        lam.update_alias,
        FunctionName=function,
        Name=alias,
        FunctionVersion=version,
        RoutingConfig={"AdditionalVersionWeights": extra},
    )


def deploy_lambda(
    model_dir: Path,
    params: Params,
    clients: LambdaClients,
    work_dir: Path,
    base: Path = Path("."),
) -> DeployResult:
    """Ship `model_dir` to the Lambda function; see the module docstring for the steps."""
    from itsacat.serve.package import build_lambda_zip, read_lambda_manifest

    p = params.deploy.aws_lambda
    lam, function, alias = clients.lambda_, p.function_name, p.alias
    role = aws.require_role(p.role_arn, "deploy.aws_lambda.role_arn (the function's role)")
    version = model_version(model_dir)
    cases = select_cases(params.deploy.smoke, base)
    aws.require_alarms(clients.cloudwatch, p.alarms, "deploy.aws_lambda.alarms")
    # the first call to Lambda itself: no credentials, no access, a region typo show here,
    # before seconds of building a 25 MB zip
    current = _alias(lam, function, alias)

    site = Path(p.site_packages) if p.site_packages else None
    zip_path = build_lambda_zip(model_dir, work_dir / "lambda.zip", site)
    manifest = read_lambda_manifest(zip_path)
    code = zip_path.read_bytes()
    sha = base64.b64encode(hashlib.sha256(code).digest()).decode()  # Lambda's CodeSha256
    settings: dict[str, Any] = {
        "Role": role,
        "Handler": str(manifest["handler"]),
        "Runtime": str(manifest["runtime"]),
        "MemorySize": p.memory_mb,
        "Timeout": p.timeout_s,
        "Description": f"itsacat cat/non-cat classifier, model {version}",
    }

    live_version = current["FunctionVersion"] if current else None
    routing = ((current or {}).get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    if live_version and not routing and _live_matches(lam, function, live_version, sha, settings):
        log.info("%s:%s already serves this zip (version %s)", function, alias, live_version)
        return DeployResult("lambda", "unchanged", version, f"{function}:{live_version}")

    rehearsal = rehearse(zip_path, manifest, cases, version) if p.rehearse else None
    if rehearsal is not None and not rehearsal.ok:
        raise DeployError(
            f"the Lambda zip failed its rehearsal here, nothing was deployed: "
            f"{rehearsal.first_problem()}\n{rehearsal.summary()}"
        )

    existing = _config(lam, function)
    created = existing is None
    if created:
        log.info("creating function %s (%s, %s MB)", function, manifest["runtime"], p.memory_mb)
        aws.call(
            f"creating function {function}",
            lam.create_function,
            FunctionName=function,
            Code={"ZipFile": code},
            Architectures=[str(manifest["architecture"])],
            Publish=False,
            Tags={"itsacat:managed": "true"},
            **settings,
        )
    else:
        log.info("updating function %s", function)
        aws.call(
            f"updating the code of {function}",
            lam.update_function_code,
            FunctionName=function,
            ZipFile=code,
            Architectures=[str(manifest["architecture"])],
        )
        _wait_ready(lam, function, params)
        aws.call(
            f"updating the configuration of {function}",
            lam.update_function_configuration,
            FunctionName=function,
            **settings,
        )
    _wait_ready(lam, function, params)
    published = aws.call(
        f"publishing a version of {function}",
        lam.publish_version,
        FunctionName=function,
        CodeSha256=sha,  # refuses to publish if someone else changed the code meanwhile
        Description=f"model {version}",
    )
    new = published["Version"]
    log.info("published %s:%s (model %s)", function, new, version)

    report = run_smoke(_invoker(lam, function, new), cases, version)
    if not report.ok:
        why = f"smoke test of {function}:{new} failed: {report.first_problem()}"
        if created:
            aws.call(f"deleting function {function}", lam.delete_function, FunctionName=function)
            message = f"{why}; deleted the new function {function}, nothing serves"
        elif live_version is None:
            message = f"{why}; alias {alias} was not created, version {new} takes no traffic"
        else:
            message = (
                f"{why}; alias {alias} still points at version {live_version}, version {new} "
                "stays published but takes no traffic"
            )
        _tell_rollback(params, message, version)
        raise DeployError(message + "\n" + report.summary())

    if current is None:
        aws.call(
            f"creating alias {alias}",
            lam.create_alias,
            FunctionName=function,
            Name=alias,
            FunctionVersion=new,
            Description="itsacat: the version that takes traffic",
        )
    else:
        assert live_version is not None
        _shift(clients, function, alias, live_version, new, params, version)

    after = run_smoke(_invoker(lam, function, alias), cases, version)
    if not after.ok:
        _roll_back(lam, function, alias, live_version, new, after, params, version)
    result = DeployResult(
        "lambda",
        "deployed",
        version,
        f"{function}:{new}",
        {"alias": alias, "previous_version": live_version, "smoke": report.summary()},
    )
    aws.notify(
        params,
        "deploy_succeeded",
        f"itsacat {function}: {result.summary()}",
        target="lambda",
        model_version=version,
        function=function,
        version=new,
    )
    return result


def _shift(
    clients: LambdaClients,
    function: str,
    alias: str,
    old: str,
    new: str,
    params: Params,
    version: str,
) -> None:
    """Canary: part of the alias's traffic to `new` while the alarms stay quiet, then all."""
    p = params.deploy.aws_lambda
    lam = clients.lambda_
    if p.canary_percent:
        log.info(
            "canary: %d%% of %s:%s → version %s for %d s",
            p.canary_percent,
            function,
            alias,
            new,
            p.canary_wait_s,
        )
        _point_alias(lam, function, alias, old, {new: p.canary_percent / 100})
        deadline = time.monotonic() + p.canary_wait_s
        while True:
            firing = aws.alarms_firing(clients.cloudwatch, list(p.alarms))
            if firing:
                _point_alias(lam, function, alias, old, {})
                message = (
                    f"alarm {', '.join(firing)} fired during the canary of {function}:{new}; "
                    f"alias {alias} is back on version {old}"
                )
                _tell_rollback(params, message, version)
                raise DeployError(message)
            if time.monotonic() >= deadline:
                break
            time.sleep(min(p.poll_s or 1.0, max(0.0, deadline - time.monotonic())))
    _point_alias(lam, function, alias, new, {})
    log.info("%s:%s → version %s (all traffic)", function, alias, new)


def _roll_back(
    lam: Any,
    function: str,
    alias: str,
    old: str | None,
    new: str,
    report: SmokeReport,
    params: Params,
    version: str,
) -> NoReturn:
    why = f"smoke test through {function}:{alias} failed: {report.first_problem()}"
    if old is None:
        aws.call(f"deleting alias {alias}", lam.delete_alias, FunctionName=function, Name=alias)
        message = f"{why}; removed alias {alias}, version {new} takes no traffic"
    else:
        _point_alias(lam, function, alias, old, {})
        message = f"{why}; alias {alias} is back on version {old}"
    _tell_rollback(params, message, version)
    raise DeployError(message + "\n" + report.summary())


def _tell_rollback(params: Params, message: str, version: str) -> None:
    log.warning("%s", message)
    aws.notify(
        params, "rollback", f"itsacat lambda: {message}", target="lambda", model_version=version
    )


def function_status(lam: Any, function: str, alias: str) -> dict[str, Any] | None:
    conf = _config(lam, function)
    if conf is None:
        return None
    current = _alias(lam, function, alias)
    return {
        "function": function,
        "state": conf.get("State"),
        "alias": alias,
        "version": current["FunctionVersion"] if current else None,
        "routing": (current or {}).get("RoutingConfig"),
    }
