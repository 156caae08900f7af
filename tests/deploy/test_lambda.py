"""`itsacat deploy --target lambda` against the moto server (Docker-free Lambda backend).

What these tests prove: the real zip is built, rehearsed here (its own handler, vendored
numpy/Pillow and model answer the real photos in a fresh interpreter), uploaded, published
as a version whose description carries its digest, smoke-tested by version, and the alias
moves (canary RoutingConfig first) or stays; a repeat is a no-op; a failure rolls back.
What they cannot prove: moto's Docker-free backend does not run the function, it answers
each invoke with a result the test queues (`/moto-api/static/lambda-simple/response`). The
queued answers are the handler's real response shape around what the real Predictor says
about each photo, or deliberately wrong ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import forget_aws_credentials
from itsacat.config import Params, params_from_dict
from itsacat.deploy.common import DeployError
from itsacat.deploy.lambda_ import LambdaClients, deploy_lambda, http_event, unwrap_http
from itsacat.errors import AWSError

from .conftest import answers, client, fresh_client

pytestmark = pytest.mark.aws

ROLE_NAME = "itsacat-lambda-test"
ROLE = f"arn:aws:iam::123456789012:role/{ROLE_NAME}"
_ZIPS: dict[Path, bytes] = {}


@pytest.fixture(autouse=True)
def cached_zip_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real builder, run once per model per test run (it vendors numpy: seconds)."""
    import itsacat.serve.package as package

    real = package.build_lambda_zip

    def build(model_dir: Path, out: Path, site_packages: Path | None = None) -> Path:
        if model_dir not in _ZIPS:
            _ZIPS[model_dir] = real(model_dir, out, site_packages).read_bytes()
        Path(out).write_bytes(_ZIPS[model_dir])
        return Path(out)

    monkeypatch.setattr(package, "build_lambda_zip", build)


@pytest.fixture
def clients(lambda_without_docker: str) -> LambdaClients:
    iam = client("iam", lambda_without_docker)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
    return LambdaClients(
        client("lambda", lambda_without_docker), client("cloudwatch", lambda_without_docker)
    )


def make_params(photos: list[Path], **aws_lambda: Any) -> Params:
    return params_from_dict(
        {
            "deploy": {
                "target": "lambda",
                "smoke": {"photos": [str(p) for p in photos], "max_photos": 0},
                "aws_lambda": {
                    "role_arn": ROLE,
                    "poll_s": 0,
                    "canary_wait_s": 0,
                    "rehearse": False,  # seconds each; the rehearsal tests turn it on
                    **aws_lambda,
                },
            }
        }
    )


def queue_lambda_answers(moto: str, bodies: list[Any]) -> None:
    """What the function returns, in order, for the next invokes (moto's documented hook)."""
    results = [
        json.dumps(
            {"statusCode": 200, "headers": {}, "body": json.dumps(b), "isBase64Encoded": False}
        )
        for b in bodies
    ]
    r = requests.post(
        f"{moto}/moto-api/static/lambda-simple/response", json={"results": results}, timeout=10
    )
    r.raise_for_status()


def deploy(
    model: Path,
    params: Params,
    clients: LambdaClients,
    tmp_path: Path,
    moto: str,
    photos: list[Path],
    good: bool = True,
    after_good: bool = True,
):
    right = answers(model, photos)
    first = right if good else [{"label": "dog"}] * len(photos)
    second = right if after_good else [{"label": "dog"}] * len(photos)
    queue_lambda_answers(moto, first + second)  # by version, then through the alias
    work = tmp_path / f"work-{model.name}"
    work.mkdir(exist_ok=True)
    return deploy_lambda(model, params, clients, work)


def alias_version(clients: LambdaClients) -> str:
    return clients.lambda_.get_alias(FunctionName="itsacat", Name="live")["FunctionVersion"]


def test_first_deploy_publishes_a_version_and_creates_the_alias(
    clients, model_a, photos, lambda_without_docker, tmp_path
):
    params = make_params(photos, rehearse=True)  # the real zip answers the photos here first
    result = deploy(model_a, params, clients, tmp_path, lambda_without_docker, photos)
    assert result.outcome == "deployed" and result.live == "itsacat:1"
    assert alias_version(clients) == "1"
    conf = clients.lambda_.get_function_configuration(FunctionName="itsacat", Qualifier="1")
    assert conf["Handler"] == "itsacat.serve.lambda_handler.handler"
    zipped = (tmp_path / f"work-{model_a.name}" / "lambda.zip").read_bytes()
    assert conf["CodeSha256"] == base64.b64encode(hashlib.sha256(zipped).digest()).decode()


def test_second_deploy_shifts_the_alias_through_a_canary(
    clients, model_a, model_b, photos, lambda_without_docker, tmp_path, monkeypatch
):
    import itsacat.deploy.lambda_ as module

    moves: list[tuple[str, dict]] = []
    real = module._point_alias

    def spy(lam, function, alias, version, extra):
        moves.append((version, dict(extra)))
        real(lam, function, alias, version, extra)

    monkeypatch.setattr(module, "_point_alias", spy)
    params = make_params(photos, canary_percent=20)
    deploy(model_a, params, clients, tmp_path, lambda_without_docker, photos)
    result = deploy(model_b, params, clients, tmp_path, lambda_without_docker, photos)
    assert result.outcome == "deployed" and result.live == "itsacat:2"
    assert moves == [("1", {"2": 0.2}), ("2", {})]
    assert alias_version(clients) == "2"


def test_failed_smoke_test_leaves_the_alias_on_the_previous_version(
    clients, model_a, model_b, photos, lambda_without_docker, tmp_path
):
    params = make_params(photos)
    deploy(model_a, params, clients, tmp_path, lambda_without_docker, photos)
    with pytest.raises(DeployError, match="alias live still points at version 1"):
        deploy(model_b, params, clients, tmp_path, lambda_without_docker, photos, good=False)
    assert alias_version(clients) == "1"


def test_failure_after_the_shift_moves_the_alias_back(
    clients, model_a, model_b, photos, lambda_without_docker, tmp_path
):
    params = make_params(photos)
    deploy(model_a, params, clients, tmp_path, lambda_without_docker, photos)
    with pytest.raises(DeployError, match="alias live is back on version 1"):
        deploy(model_b, params, clients, tmp_path, lambda_without_docker, photos, after_good=False)
    assert alias_version(clients) == "1"


def test_repeated_deploy_changes_nothing(clients, model_a, photos, lambda_without_docker, tmp_path):
    params = make_params(photos)
    deploy(model_a, params, clients, tmp_path, lambda_without_docker, photos)
    again = deploy_lambda(model_a, params, clients, tmp_path)
    assert again.outcome == "unchanged" and again.live == "itsacat:1"
    versions = clients.lambda_.list_versions_by_function(FunctionName="itsacat")["Versions"]
    assert sorted(v["Version"] for v in versions) == ["$LATEST", "1"]


def test_first_deploy_failing_smoke_test_deletes_the_function(
    clients, model_a, photos, lambda_without_docker, tmp_path
):
    with pytest.raises(DeployError, match="deleted the new function"):
        deploy(
            model_a,
            make_params(photos),
            clients,
            tmp_path,
            lambda_without_docker,
            photos,
            good=False,
        )
    assert clients.lambda_.list_functions()["Functions"] == []


def test_wrong_answer_fails_the_rehearsal_before_anything_is_created(
    clients, model_a, photos, tmp_path
):
    """The zip's own handler runs here on the photos; a wrong label stops the deploy."""
    photo = photos[0]
    said = answers(model_a, [photo])[0]["label"]
    wrong = "non-cat" if said == "cat" else "cat"
    params = params_from_dict(
        {
            "deploy": {
                "smoke": {"photos": [str(photo)], "expect": {photo.name: wrong}},
                "aws_lambda": {"role_arn": ROLE, "poll_s": 0},
            }
        }
    )
    with pytest.raises(DeployError, match=f"rehearsal.*labelled {said}.*expected {wrong}"):
        deploy_lambda(model_a, params, clients, tmp_path)
    assert clients.lambda_.list_functions()["Functions"] == []


def test_missing_role_is_one_clear_message(clients, model_a, photos, tmp_path):
    with pytest.raises(AWSError, match=r"deploy\.aws_lambda\.role_arn .*is empty"):
        deploy_lambda(model_a, make_params(photos, role_arn=""), clients, tmp_path)


def test_missing_alarm_is_one_clear_message(clients, model_a, photos, tmp_path):
    params = make_params(photos, alarms=["no-such-alarm"])
    with pytest.raises(AWSError, match="do not exist: no-such-alarm"):
        deploy_lambda(model_a, params, clients, tmp_path)


def test_http_event_round_trip_through_the_real_handler(model_a, photos, monkeypatch):
    """The smoke event is one the real handler accepts, and its answer unwraps to a verdict."""
    import itsacat.serve.lambda_handler as handler_module

    monkeypatch.setenv("ITSACAT_MODEL_DIR", str(model_a))
    monkeypatch.setattr(handler_module, "_PREDICTOR", None)
    photo = photos[0]
    answer = handler_module.handler(http_event(photo.read_bytes(), "image/jpeg"))
    body = json.loads(unwrap_http(json.dumps(answer).encode()))
    assert body == answers(model_a, [photo])[0]


def test_missing_credentials_fail_before_the_zip_is_built(
    model_a, photos, tmp_path, monkeypatch, lambda_without_docker
):
    """The zip vendors numpy and takes seconds: the first Lambda call comes before it."""
    import itsacat.serve.package as package

    forget_aws_credentials(monkeypatch, tmp_path / "none")
    built: list[Path] = []
    monkeypatch.setattr(
        package, "build_lambda_zip", lambda model, out, site=None: built.append(out)
    )
    clients = LambdaClients(fresh_client("lambda", lambda_without_docker), None)
    with pytest.raises(AWSError, match="no AWS credentials found"):
        deploy_lambda(model_a, make_params(photos), clients, tmp_path)
    assert built == []
