"""`itsacat deploy --target sagemaker` against the moto server: first deploy, update, rollback,
no-op, A/B, and bad configuration.

moto marks endpoints InService at once and answers invoke_endpoint with results the test
queues; the queued answers are what the real inference code says about the real photos for
the model being deployed (or a deliberately wrong answer). So these tests prove the
orchestration: names, registry, S3 keys, blue/green config, rollback, idempotence and error
messages. They cannot prove that SageMaker's scikit-learn container runs code/inference.py;
the serving tests unpack model.tar.gz and call its functions the way the container does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import forget_aws_credentials
from itsacat.config import Params, params_from_dict
from itsacat.deploy.common import DeployError
from itsacat.deploy.sagemaker import (
    SageMakerClients,
    deploy_sagemaker,
    deployment_config,
    plan_variants,
)
from itsacat.errors import AWSError

from .conftest import ROLE, answers, client, fresh_client, queue_sagemaker_answers

pytestmark = pytest.mark.aws

BUCKET = "itsacat-deploy-test"


def make_params(
    photos: list[Path], bucket: str = BUCKET, notify: dict | None = None, **sagemaker: Any
) -> Params:
    raw = {
        "aws": {"region": "us-east-1", "bucket": bucket, "role_arn": ROLE},
        "notify": notify or {},
        "deploy": {
            "target": "sagemaker",
            "smoke": {"photos": [str(p) for p in photos], "max_photos": 0},
            "sagemaker": {"poll_s": 0, **sagemaker},
        },
    }
    return params_from_dict(raw)


@pytest.fixture
def clients(
    aws_env: str, sagemaker_update_endpoint: list[dict], sagemaker_runtime_binary: None
) -> SageMakerClients:
    c = SageMakerClients(
        s3=client("s3", aws_env),
        sagemaker=client("sagemaker", aws_env),
        runtime=client("sagemaker-runtime", aws_env),
        cloudwatch=client("cloudwatch", aws_env),
    )
    c.s3.create_bucket(Bucket=BUCKET)
    return c


def deploy(
    model: Path,
    params: Params,
    clients: SageMakerClients,
    tmp_path: Path,
    moto: str,
    photos: list[Path],
    good: bool = True,
):
    queue_sagemaker_answers(
        moto, answers(model, photos) if good else [{"label": "dog"}] * len(photos)
    )
    work = tmp_path / f"work-{model.name}"
    work.mkdir(exist_ok=True)
    return deploy_sagemaker(model, params, clients, work)


def live_models(clients: SageMakerClients, endpoint: str = "itsacat") -> list[str]:
    desc = clients.sagemaker.describe_endpoint(EndpointName=endpoint)
    assert desc["EndpointStatus"] == "InService"
    config = clients.sagemaker.describe_endpoint_config(
        EndpointConfigName=desc["EndpointConfigName"]
    )
    return [v["ModelName"] for v in config["ProductionVariants"]]


def packages(clients: SageMakerClients) -> list[dict]:
    return clients.sagemaker.list_model_packages(ModelPackageGroupName="itsacat")[
        "ModelPackageSummaryList"
    ]


def test_first_deploy_creates_registers_and_smoke_tests(
    clients, model_a, photos, aws_env, tmp_path
):
    params = make_params(photos)
    result = deploy(model_a, params, clients, tmp_path, aws_env, photos)
    assert result.outcome == "deployed"
    assert live_models(clients) == [result.details["model"]]
    (pkg,) = packages(clients)
    assert pkg["ModelApprovalStatus"] == "Approved"
    key = clients.s3.list_objects_v2(Bucket=BUCKET)["Contents"][0]["Key"]
    assert key.startswith("itsacat/deploy/sagemaker/") and key.endswith("/model.tar.gz")
    model = clients.sagemaker.describe_model(ModelName=result.details["model"])
    assert model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{BUCKET}/{key}"
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    spec = clients.sagemaker.describe_model_package(ModelPackageName=pkg["ModelPackageArn"])
    (container,) = spec["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/{key}"
    assert container["Image"].endswith("/sagemaker-scikit-learn:1.2-1-cpu-py3")
    assert result.model_version in spec["ModelPackageDescription"]


def test_second_deploy_is_a_blue_green_update(
    clients, sagemaker_update_endpoint, model_a, model_b, photos, aws_env, tmp_path
):
    params = make_params(photos, traffic={"mode": "linear", "linear_step_percent": 50})
    first = deploy(model_a, params, clients, tmp_path, aws_env, photos)
    second = deploy(model_b, params, clients, tmp_path, aws_env, photos)
    assert second.outcome == "deployed"
    assert second.details["previous_config"] == first.live
    assert live_models(clients) == [second.details["model"]]
    (call,) = sagemaker_update_endpoint
    policy = call["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert policy["Type"] == "LINEAR" and policy["LinearStepSize"]["Value"] == 50
    alarms = call["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
    assert alarms == [{"AlarmName": "itsacat-primary-5xx"}]
    alarm = client("cloudwatch", aws_env).describe_alarms(AlarmNames=["itsacat-primary-5xx"])
    assert alarm["MetricAlarms"][0]["MetricName"] == "Invocation5XXErrors"
    assert [p["ModelApprovalStatus"] for p in packages(clients)] == ["Approved", "Approved"]


def subscribed_queue(moto: str) -> tuple[str, str]:
    """An SNS topic and the SQS queue that hears it: (topic ARN, queue URL)."""
    sns, sqs = client("sns", moto), client("sqs", moto)
    topic = sns.create_topic(Name="itsacat-deploys")["TopicArn"]
    queue = sqs.create_queue(QueueName="itsacat-deploys")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"])
    return topic, queue


def events(moto: str, queue: str) -> list[str]:
    got = client("sqs", moto).receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
    bodies = [json.loads(json.loads(m["Body"])["Message"]) for m in got.get("Messages", [])]
    return [b["event"] for b in bodies]


def test_failed_smoke_test_rolls_back_to_the_previous_config(
    clients, sagemaker_update_endpoint, model_a, model_b, photos, aws_env, tmp_path
):
    topic, queue = subscribed_queue(aws_env)
    params = make_params(photos, notify={"sns_topic_arn": topic})
    first = deploy(model_a, params, clients, tmp_path, aws_env, photos)
    with pytest.raises(DeployError, match=r"smoke test failed: .*rolled back to " + first.live):
        deploy(model_b, params, clients, tmp_path, aws_env, photos, good=False)
    assert live_models(clients) == [first.details["model"]]
    assert [c["EndpointConfigName"] for c in sagemaker_update_endpoint][-1] == first.live
    statuses = sorted(p["ModelApprovalStatus"] for p in packages(clients))
    assert statuses == ["Approved", "Rejected"]
    assert events(aws_env, queue) == ["deploy_succeeded", "rollback"]


def test_cli_deploys_and_reports_bad_config_in_one_line(
    clients, model_a, photos, aws_env, tmp_path, capsys
):
    """`itsacat deploy --target sagemaker` makes its own clients (AWS_ENDPOINT_URL → moto)."""
    from itsacat.cli import main as cli_main

    yaml = tmp_path / "params.yaml"
    raw = {
        "aws": {"bucket": BUCKET, "role_arn": ROLE},
        "deploy": {"smoke": {"photos": [str(p) for p in photos]}, "sagemaker": {"poll_s": 0}},
    }
    yaml.write_text(json.dumps(raw))
    queue_sagemaker_answers(aws_env, answers(model_a, photos))
    argv = ["deploy", "--target", "sagemaker", "--model-dir", str(model_a), "--params", str(yaml)]
    assert cli_main(argv) == 0
    assert "sagemaker: deployed model" in capsys.readouterr().out
    assert cli_main(["endpoint", "status", "--target", "sagemaker", "--params", str(yaml)]) == 0
    assert "status: InService" in capsys.readouterr().out
    raw["aws"]["bucket"] = "not-there-bucket"
    yaml.write_text(json.dumps(raw))
    assert cli_main(argv) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("itsacat: error:")]
    assert len(errors) == 1 and "bucket 'not-there-bucket' does not exist" in errors[0]
    assert "Traceback" not in err


def test_answer_from_the_old_model_fails_the_smoke_test(
    clients, model_a, model_b, photos, aws_env, tmp_path
):
    """The endpoint answering with the previous model's version is a real failure."""
    params = make_params(photos)
    first = deploy(model_a, params, clients, tmp_path, aws_env, photos)
    queue_sagemaker_answers(aws_env, answers(model_a, photos))  # stale answers
    with pytest.raises(DeployError, match="expected the new model"):
        deploy_sagemaker(model_b, params, clients, tmp_path)
    assert live_models(clients) == [first.details["model"]]


def test_first_deploy_failing_smoke_test_leaves_nothing_serving(
    clients, model_a, photos, aws_env, tmp_path
):
    params = make_params(photos)
    with pytest.raises(DeployError, match="deleted the new endpoint"):
        deploy(model_a, params, clients, tmp_path, aws_env, photos, good=False)
    assert clients.sagemaker.list_endpoints()["Endpoints"] == []
    assert clients.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert clients.sagemaker.list_models()["Models"] == []


def test_repeated_deploy_changes_nothing(
    clients, sagemaker_update_endpoint, model_a, photos, aws_env, tmp_path
):
    params = make_params(photos)
    first = deploy(model_a, params, clients, tmp_path, aws_env, photos)
    before = clients.sagemaker.describe_endpoint(EndpointName="itsacat")
    again = deploy_sagemaker(model_a, params, clients, tmp_path)
    assert again.outcome == "unchanged" and again.live == first.live
    after = clients.sagemaker.describe_endpoint(EndpointName="itsacat")
    assert after["LastModifiedTime"] == before["LastModifiedTime"]
    assert after["EndpointConfigName"] == before["EndpointConfigName"]
    assert len(clients.sagemaker.list_models()["Models"]) == 1
    assert sagemaker_update_endpoint == []
    assert len(packages(clients)) == 1
    assert len(clients.s3.list_objects_v2(Bucket=BUCKET)["Contents"]) == 1


def test_ab_test_splits_traffic_between_live_and_new_model(
    clients, model_a, model_b, photos, aws_env, tmp_path
):
    params = make_params(photos, ab_new_weight=0.2)
    first = deploy(model_a, params, clients, tmp_path, aws_env, photos)
    assert len(live_models(clients)) == 1  # nothing to compare against yet
    second = deploy(model_b, params, clients, tmp_path, aws_env, photos)
    desc = clients.sagemaker.describe_endpoint_config(EndpointConfigName=second.live)
    weights = {
        v["VariantName"]: (v["ModelName"], v["InitialVariantWeight"])
        for v in desc["ProductionVariants"]
    }
    assert weights == {
        "live": (first.details["model"], 0.8),
        "candidate": (second.details["model"], 0.2),
    }
    assert deploy_sagemaker(model_b, params, clients, tmp_path).outcome == "unchanged"


def test_missing_bucket_is_one_clear_message(clients, model_a, photos, tmp_path):
    params = make_params(photos, bucket="no-such-bucket-here")
    with pytest.raises(AWSError, match=r"no-such-bucket-here.*does not exist.*aws bootstrap"):
        deploy_sagemaker(model_a, params, clients, tmp_path)
    assert clients.sagemaker.list_models()["Models"] == []


def test_an_instance_type_sagemaker_does_not_host_on_is_refused_before_anything_is_made(
    clients, model_a, photos, tmp_path
):
    from itsacat.errors import ConfigError

    params = make_params(photos, instance_type="ml.m5.larg")
    with pytest.raises(ConfigError) as info:
        deploy_sagemaker(model_a, params, clients, tmp_path)
    message = str(info.value)
    assert "deploy.sagemaker.instance_type 'ml.m5.larg' is not an instance type" in message
    assert "pick one such as ml.m5.large, ml.m5.xlarge" in message
    assert clients.sagemaker.list_models()["Models"] == []
    assert clients.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_bad_role_arn_is_refused_before_anything_is_created(photos):
    from itsacat.errors import ConfigError

    with pytest.raises(ConfigError, match=r"aws\.role_arn must be an IAM role ARN"):
        params_from_dict({"aws": {"role_arn": "itsacat-role"}})
    with pytest.raises(ConfigError, match=r"deploy\.aws_lambda\.role_arn must be an IAM role"):
        params_from_dict({"deploy": {"aws_lambda": {"role_arn": "arn:aws:iam::12:role/x"}}})


def test_missing_credentials_is_one_clear_message(
    model_a, photos, tmp_path, monkeypatch, moto_server
):
    forget_aws_credentials(monkeypatch, tmp_path / "none")
    s3 = fresh_client("s3", moto_server)
    clients = SageMakerClients(s3, None, None, None)
    with pytest.raises(AWSError, match="no AWS credentials found"):
        deploy_sagemaker(model_a, make_params(photos), clients, tmp_path)


def test_endpoint_stuck_in_failed_names_the_fix(
    clients, model_a, model_b, photos, aws_env, tmp_path
):
    from moto.sagemaker.models import sagemaker_backends

    params = make_params(photos)
    deploy(model_a, params, clients, tmp_path, aws_env, photos)
    endpoint = sagemaker_backends["123456789012"]["us-east-1"].endpoints["itsacat"]
    endpoint.endpoint_status, endpoint.failure_reason = "Failed", "ping timed out"
    with pytest.raises(DeployError, match=r"is Failed .ping timed out.*delete-endpoint"):
        deploy_sagemaker(model_b, params, clients, tmp_path)


def test_deployment_config_shapes():
    from itsacat.config import TrafficParams

    canary = deployment_config(TrafficParams(canary_percent=5, wait_s=60), ["a"], 100)
    routing = canary["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {
        "Type": "CANARY",
        "WaitIntervalInSeconds": 60,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 5},
    }
    assert canary["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"] == 600
    once = deployment_config(TrafficParams(mode="all_at_once"), [], 99999)
    assert "AutoRollbackConfiguration" not in once
    assert once["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"] == 14400


def test_plan_variants_keeps_the_heaviest_live_model_for_ab():
    live = [
        {"VariantName": "live", "ModelName": "m0", "InitialVariantWeight": 0.9},
        {"VariantName": "candidate", "ModelName": "m1", "InitialVariantWeight": 0.1},
    ]
    assert [v.model_name for v in plan_variants("m2", live, 0.3)] == ["m0", "m2"]
    assert [v.model_name for v in plan_variants("m2", live, 0.0)] == ["m2"]
    assert [v.name for v in plan_variants("m0", live[:1], 0.3)] == ["primary"]


def test_new_endpoint_that_fails_is_deleted_and_reported(
    clients, model_a, photos, aws_env, tmp_path, monkeypatch
):
    """An endpoint that ends Failed (bad image, bad role…) leaves nothing half-created."""
    from moto.sagemaker.models import SageMakerModelBackend

    real = SageMakerModelBackend.create_endpoint

    def failing(self, *args, **kwargs):
        endpoint = real(self, *args, **kwargs)
        endpoint.endpoint_status = "Failed"
        endpoint.failure_reason = "The primary container did not pass the ping health check"
        return endpoint

    monkeypatch.setattr(SageMakerModelBackend, "create_endpoint", failing)
    with pytest.raises(DeployError, match=r"is Failed: The primary container.*Deleted the failed"):
        deploy_sagemaker(model_a, make_params(photos), clients, tmp_path)
    assert clients.sagemaker.list_endpoints()["Endpoints"] == []
    assert clients.sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert clients.sagemaker.list_models()["Models"] == []
    assert [p["ModelApprovalStatus"] for p in packages(clients)] == ["Rejected"]
