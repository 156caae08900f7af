"""Deploy to a SageMaker real-time endpoint: registry, blue/green update, smoke test, rollback.

    deploy_sagemaker(Path("model"), params, clients, work_dir)

1. Build `model.tar.gz` (the model + `code/inference.py`, by `serve.package`) and upload it
   under a content-addressed key, `s3://<aws.bucket>/<prefix>/<digest>/model.tar.gz`.
2. Register it as a version in the model package group (the registry), pending approval.
3. Create the SageMaker model and an endpoint config whose names derive from the digest, so
   the same model always maps to the same names and a repeated deploy changes nothing.
4. Create the endpoint, or update it with a blue/green deployment (canary, linear or all at
   once) that SageMaker itself rolls back when a CloudWatch alarm fires.
5. Wait for InService, smoke-test the new variant with real photos, approve the package.
   A failing smoke test rolls the endpoint back to the previous endpoint config (or deletes
   a brand-new endpoint) and rejects the package.

Clients come in (`SageMakerClients`); nothing here creates one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsacat.aws.clients import require_instance_type
from itsacat.config import Params, SageMakerDeployParams, TrafficParams
from itsacat.deploy import aws_common as aws
from itsacat.deploy.common import DeployError, DeployResult, file_digest, model_version
from itsacat.deploy.smoke import Invoke, SmokeCase, run_smoke, select_cases
from itsacat.errors import AWSError

log = logging.getLogger(__name__)

BUSY = {"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting", "UpdateRollbackFailed"}

# SageMaker's prebuilt scikit-learn image (it runs code/inference.py from model.tar.gz);
# the registry account differs per region. Other regions: set deploy.sagemaker.image_uri.
SKLEARN_ACCOUNTS = {
    "us-east-1": "683313688378",
    "us-east-2": "257758044811",
    "us-west-2": "246618743249",
    "eu-west-1": "141502667606",
    "eu-central-1": "492215442770",
}
SKLEARN_TAG = "1.2-1-cpu-py3"


@dataclass(frozen=True)
class SageMakerClients:
    s3: Any
    sagemaker: Any
    runtime: Any  # sagemaker-runtime
    cloudwatch: Any


@dataclass(frozen=True)
class Variant:
    name: str
    model_name: str
    weight: float


def default_image(region: str) -> str:
    account = SKLEARN_ACCOUNTS.get(region)
    if account is None:
        raise AWSError(
            f"no known SageMaker scikit-learn image for region {region!r}; set "
            "deploy.sagemaker.image_uri (e.g. from `sagemaker.image_uris.retrieve('sklearn', "
            f"region, '1.2-1')`) or use one of {', '.join(SKLEARN_ACCOUNTS)}"
        )
    return f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-scikit-learn:{SKLEARN_TAG}"


def deployment_config(traffic: TrafficParams, alarms: list[str], timeout_s: float) -> dict:
    """The blue/green `DeploymentConfig` of `update_endpoint` for these traffic settings."""
    routing: dict[str, Any] = {"Type": traffic.mode.upper(), "WaitIntervalInSeconds": 0}
    if traffic.mode == "canary":
        routing["WaitIntervalInSeconds"] = traffic.wait_s
        routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": traffic.canary_percent}
    elif traffic.mode == "linear":
        routing["WaitIntervalInSeconds"] = traffic.wait_s
        routing["LinearStepSize"] = {
            "Type": "CAPACITY_PERCENT",
            "Value": traffic.linear_step_percent,
        }
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": traffic.termination_wait_s,
            "MaximumExecutionTimeoutInSeconds": int(max(600, min(14400, timeout_s))),
        }
    }
    if alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return config


def plan_variants(
    new_model: str, live_variants: list[dict[str, Any]], ab_new_weight: float
) -> list[Variant]:
    """The production variants of the new endpoint config.

    Without A/B testing, one variant serves the new model. With `ab_new_weight` > 0 and a
    different model live, the live model keeps 1 - w of the traffic and the new one gets w.
    """
    others = [v for v in live_variants if v["ModelName"] != new_model]
    if ab_new_weight <= 0 or not others:
        return [Variant("primary", new_model, 1.0)]
    live = max(others, key=lambda v: (v.get("InitialVariantWeight", 1.0), v["VariantName"]))
    return [
        Variant("live", live["ModelName"], round(1.0 - ab_new_weight, 6)),
        Variant("candidate", new_model, round(ab_new_weight, 6)),
    ]


def config_name(endpoint: str, variants: list[Variant], instance_type: str, count: int) -> str:
    spec = json.dumps([[v.name, v.model_name, v.weight] for v in variants] + [instance_type, count])
    return f"{endpoint}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def _describe_endpoint(sm: Any, name: str) -> dict[str, Any] | None:
    return aws.find(f"describing endpoint {name}", sm.describe_endpoint, EndpointName=name)


def _wait_in_service(sm: Any, name: str, params: Params) -> dict[str, Any]:
    p = params.deploy.sagemaker
    return aws.poll(
        f"endpoint {name}",
        lambda: aws.call("describing endpoint", sm.describe_endpoint, EndpointName=name),
        lambda d: d["EndpointStatus"] not in BUSY,
        lambda d: d["EndpointStatus"],
        p.poll_s,
        p.timeout_s,
    )


def _ensure_alarms(
    clients: SageMakerClients, endpoint: str, variants: list[Variant], p: SageMakerDeployParams
) -> list[str]:
    """The alarms that guard the shift: configured ones (checked to exist) + our 5xx alarms."""
    traffic = p.traffic
    aws.require_alarms(clients.cloudwatch, traffic.alarms, "deploy.sagemaker.traffic.alarms")
    names = list(traffic.alarms)
    if traffic.create_alarms:
        for v in variants:
            alarm = f"{endpoint}-{v.name}-5xx"
            aws.call(
                f"creating alarm {alarm}",
                clients.cloudwatch.put_metric_alarm,
                AlarmName=alarm,
                AlarmDescription=f"itsacat: 5xx errors on endpoint {endpoint} ({v.name})",
                Namespace="AWS/SageMaker",
                MetricName="Invocation5XXErrors",
                Dimensions=[
                    {"Name": "EndpointName", "Value": endpoint},
                    {"Name": "VariantName", "Value": v.name},
                ],
                Statistic="Sum",
                Period=60,
                EvaluationPeriods=1,
                Threshold=1.0,
                ComparisonOperator="GreaterThanOrEqualToThreshold",
                TreatMissingData="notBreaching",
            )
            names.append(alarm)
    return names


def _upload(s3: Any, tarball: Path, bucket: str, key: str) -> str:
    url = f"s3://{bucket}/{key}"
    if aws.find("looking up the model archive", s3.head_object, Bucket=bucket, Key=key) is None:
        log.info("uploading %s → %s", tarball.name, url)
        aws.call(f"uploading {url}", s3.upload_file, Filename=str(tarball), Bucket=bucket, Key=key)
    else:
        log.info("%s already uploaded", url)
    return url


def _register(
    sm: Any, group: str, image: str, data_url: str, version: str, digest: str, instance: str
) -> tuple[str, bool]:
    """The package ARN in the registry for this archive, creating group/version as needed."""
    if (
        aws.find(
            "describing model package group",
            sm.describe_model_package_group,
            ModelPackageGroupName=group,
        )
        is None
    ):
        aws.call(
            f"creating model package group {group}",
            sm.create_model_package_group,
            ModelPackageGroupName=group,
            ModelPackageGroupDescription="itsacat cat/non-cat models (itsacat deploy)",
        )
    description = f"itsacat model {version}, archive {digest[:16]}"
    token = None
    while True:
        kwargs: dict[str, Any] = {"ModelPackageGroupName": group, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = aws.call("listing model packages", sm.list_model_packages, **kwargs)
        for summary in page.get("ModelPackageSummaryList", []):
            if summary.get("ModelPackageDescription") == description:
                return summary["ModelPackageArn"], False
        token = page.get("NextToken")
        if not token:
            break
    created = aws.call(
        f"registering the model in {group}",
        sm.create_model_package,
        ModelPackageGroupName=group,
        ModelPackageDescription=description,
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": data_url}],
            "SupportedContentTypes": ["image/jpeg", "image/png", "application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
            "SupportedRealtimeInferenceInstanceTypes": [instance],
        },
        CustomerMetadataProperties={"model_version": version, "archive_sha256": digest},
    )
    return created["ModelPackageArn"], True


def _set_approval(sm: Any, arn: str, status: str, why: str) -> None:
    aws.call(
        "updating the model package",
        sm.update_model_package,
        ModelPackageArn=arn,
        ModelApprovalStatus=status,
        ApprovalDescription=why[:1000],
    )


def _invoker(runtime: Any, endpoint: str, variant: str | None, version: str) -> Invoke:
    def invoke(body: bytes, content_type: str) -> bytes:
        kwargs: dict[str, Any] = {
            "EndpointName": endpoint,
            "Body": body,
            "ContentType": content_type,
            "Accept": "application/json",
            # marks smoke-test requests in data capture, per model version
            "InferenceId": f"itsacat-smoke-{version}",
        }
        if variant:
            kwargs["TargetVariant"] = variant
        answer = aws.call(f"invoking endpoint {endpoint}", runtime.invoke_endpoint, **kwargs)
        return answer["Body"].read()

    return invoke


@dataclass(frozen=True)
class _Plan:
    """Everything decided before anything on AWS changes."""

    endpoint: str
    version: str
    digest: str
    model_name: str
    image: str
    role: str
    region: str
    bucket: str
    variants: list[Variant]
    new_config: str
    live_config: str | None  # None: the endpoint does not exist yet

    @property
    def new_variant(self) -> str:
        return next(v.name for v in self.variants if v.model_name == self.model_name)


def deploy_sagemaker(
    model_dir: Path,
    params: Params,
    clients: SageMakerClients,
    work_dir: Path,
    base: Path = Path("."),
) -> DeployResult:
    """Ship `model_dir` to the SageMaker endpoint; see the module docstring for the steps."""
    from itsacat.serve.package import build_model_tarball

    p = params.deploy.sagemaker
    endpoint = p.endpoint_name
    region = params.aws.region
    role = aws.require_role(params.aws.role_arn, "aws.role_arn (the SageMaker execution role)")
    image = p.image_uri or default_image(region)
    version = model_version(model_dir)
    cases = select_cases(params.deploy.smoke, base)
    bucket = aws.require_bucket(params, clients.s3, base)
    require_instance_type(
        clients.sagemaker,
        "ProductionVariantInstanceType",
        p.instance_type,
        "deploy.sagemaker.instance_type",
        "hosts endpoints on",
    )

    tarball = build_model_tarball(model_dir, work_dir / "model.tar.gz")
    digest = file_digest(tarball)
    model_name = f"{endpoint}-{digest[:12]}"

    current = _describe_endpoint(clients.sagemaker, endpoint)
    live_config: str | None = None
    live_variants: list[dict[str, Any]] = []
    if current is not None:
        status = current["EndpointStatus"]
        if status in BUSY:
            raise DeployError(
                f"endpoint {endpoint} is {status}; wait until it settles "
                "(`itsacat endpoint status --target sagemaker`), then deploy again"
            )
        if status == "Failed":
            raise DeployError(
                f"endpoint {endpoint} is Failed ({current.get('FailureReason', 'no reason')}); "
                f"delete it (`aws sagemaker delete-endpoint --endpoint-name {endpoint}`) "
                "and deploy again"
            )
        live_config = current["EndpointConfigName"]
        live = aws.call(
            "describing the live endpoint config",
            clients.sagemaker.describe_endpoint_config,
            EndpointConfigName=live_config,
        )
        live_variants = live["ProductionVariants"]

    variants = plan_variants(model_name, live_variants, p.ab_new_weight)
    plan = _Plan(
        endpoint=endpoint,
        version=version,
        digest=digest,
        model_name=model_name,
        image=image,
        role=role,
        region=region,
        bucket=bucket,
        variants=variants,
        new_config=config_name(endpoint, variants, p.instance_type, p.instance_count),
        live_config=live_config,
    )
    if live_config == plan.new_config:
        log.info("endpoint %s already serves %s (config %s)", endpoint, version, live_config)
        return DeployResult("sagemaker", "unchanged", version, live_config, {"endpoint": endpoint})

    created: list[str] = []  # what this run created, named in any failure message
    try:
        return _ship(plan, tarball, cases, params, clients, created)
    except AWSError as exc:
        if not created:
            raise
        raise AWSError(
            f"{exc}\nCreated before the failure and left in place: {', '.join(created)}"
        ) from None


def _ship(
    plan: _Plan,
    tarball: Path,
    cases: list[SmokeCase],
    params: Params,
    clients: SageMakerClients,
    created: list[str],
) -> DeployResult:
    p = params.deploy.sagemaker
    sm = clients.sagemaker
    endpoint, version = plan.endpoint, plan.version
    key = f"{params.aws.prefix}/deploy/sagemaker/{plan.digest[:16]}/model.tar.gz"
    data_url = _upload(clients.s3, tarball, plan.bucket, key)
    package_arn, new_package = _register(
        sm, p.model_package_group, plan.image, data_url, version, plan.digest, p.instance_type
    )
    if new_package:
        created.append(f"model package {package_arn}")

    if aws.find("describing model", sm.describe_model, ModelName=plan.model_name) is None:
        aws.call(
            f"creating model {plan.model_name}",
            sm.create_model,
            ModelName=plan.model_name,
            ExecutionRoleArn=plan.role,
            PrimaryContainer={
                "Image": plan.image,
                "ModelDataUrl": data_url,
                "Environment": {
                    "SAGEMAKER_PROGRAM": "inference.py",
                    "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                    "SAGEMAKER_REGION": plan.region,
                },
            },
            Tags=[
                {"Key": "itsacat:model-version", "Value": version},
                {"Key": "itsacat:model-package", "Value": package_arn},
            ],
        )
        created.append(f"model {plan.model_name}")
    known = aws.find(
        "describing endpoint config",
        sm.describe_endpoint_config,
        EndpointConfigName=plan.new_config,
    )
    if known is None:
        aws.call(
            f"creating endpoint config {plan.new_config}",
            sm.create_endpoint_config,
            EndpointConfigName=plan.new_config,
            ProductionVariants=[
                {
                    "VariantName": v.name,
                    "ModelName": v.model_name,
                    "InstanceType": p.instance_type,
                    "InitialInstanceCount": p.instance_count,
                    "InitialVariantWeight": v.weight,
                }
                for v in plan.variants
            ],
            Tags=[{"Key": "itsacat:model-version", "Value": version}],
        )
        created.append(f"endpoint config {plan.new_config}")

    alarms = _ensure_alarms(clients, endpoint, plan.variants, p)
    if plan.live_config is None:
        log.info("creating endpoint %s (config %s)", endpoint, plan.new_config)
        aws.call(
            f"creating endpoint {endpoint}",
            sm.create_endpoint,
            EndpointName=endpoint,
            EndpointConfigName=plan.new_config,
            Tags=[{"Key": "itsacat:managed", "Value": "true"}],
        )
    else:
        log.info(
            "updating endpoint %s: %s → %s (blue/green, %s)",
            endpoint,
            plan.live_config,
            plan.new_config,
            p.traffic.mode,
        )
        aws.call(
            f"updating endpoint {endpoint}",
            sm.update_endpoint,
            EndpointName=endpoint,
            EndpointConfigName=plan.new_config,
            DeploymentConfig=deployment_config(p.traffic, alarms, p.timeout_s),
        )

    settled = _wait_in_service(sm, endpoint, params)
    if settled["EndpointStatus"] != "InService":
        reason = settled.get("FailureReason", "no reason given")
        _set_approval(sm, package_arn, "Rejected", f"endpoint failed: {reason}")
        if plan.live_config is None:
            aws.find(f"deleting endpoint {endpoint}", sm.delete_endpoint, EndpointName=endpoint)
            left = "Deleted the failed new endpoint. " + _delete_created(sm, created)
        else:
            left = f"Created and left: {', '.join(created) or 'nothing'}."
        created.clear()  # reported here
        raise DeployError(
            f"endpoint {endpoint} is {settled['EndpointStatus']}: {reason}; check the model "
            f"with `itsacat serve` locally and the endpoint's CloudWatch logs. {left}"
        )
    if settled["EndpointConfigName"] != plan.new_config:
        # SageMaker's own auto-rollback: an alarm fired during the traffic shift
        why = f"SageMaker rolled the update back to {settled['EndpointConfigName']}"
        _set_approval(sm, package_arn, "Rejected", why)
        message = f"{why} (an alarm fired: {', '.join(alarms)}); model {version} is not live"
        aws.notify(
            params,
            "rollback",
            f"itsacat {endpoint}: {message}",
            target="sagemaker",
            model_version=version,
        )
        raise DeployError(message)

    variant = plan.new_variant if len(plan.variants) > 1 else None
    report = run_smoke(_invoker(clients.runtime, endpoint, variant, version), cases, version)
    if not report.ok:
        why = f"smoke test failed: {report.first_problem()}"
        _set_approval(sm, package_arn, "Rejected", why)
        if plan.live_config is None:
            aws.call(f"deleting endpoint {endpoint}", sm.delete_endpoint, EndpointName=endpoint)
            left = _delete_created(sm, created)
            message = f"{why}; deleted the new endpoint {endpoint}. {left}"
        else:
            _rollback(sm, endpoint, plan.live_config, params)
            message = f"{why}; endpoint {endpoint} rolled back to {plan.live_config}"
        created.clear()
        aws.notify(
            params,
            "rollback",
            f"itsacat {endpoint}: {message}",
            target="sagemaker",
            model_version=version,
        )
        raise DeployError(message + "\n" + report.summary())

    _set_approval(sm, package_arn, "Approved", report.summary())
    result = DeployResult(
        "sagemaker",
        "deployed",
        version,
        plan.new_config,
        {
            "endpoint": endpoint,
            "model": plan.model_name,
            "package": package_arn,
            "variants": [v.__dict__ for v in plan.variants],
            "previous_config": plan.live_config,
            "smoke": report.summary(),
        },
    )
    aws.notify(
        params,
        "deploy_succeeded",
        f"itsacat {endpoint}: {result.summary()}",
        target="sagemaker",
        model_version=version,
        endpoint=endpoint,
    )
    return result


def _rollback(sm: Any, endpoint: str, config: str, params: Params) -> None:
    log.warning("rolling endpoint %s back to %s", endpoint, config)
    quick = TrafficParams(mode="all_at_once", alarms=(), create_alarms=False)
    aws.call(
        f"rolling endpoint {endpoint} back",
        sm.update_endpoint,
        EndpointName=endpoint,
        EndpointConfigName=config,
        DeploymentConfig=deployment_config(quick, [], params.deploy.sagemaker.timeout_s),
    )
    settled = _wait_in_service(sm, endpoint, params)
    if settled["EndpointStatus"] != "InService" or settled["EndpointConfigName"] != config:
        raise DeployError(
            f"rollback of endpoint {endpoint} to {config} ended {settled['EndpointStatus']} "
            f"on {settled['EndpointConfigName']}; check it in the SageMaker console"
        )


def _delete_created(sm: Any, created: list[str]) -> str:
    """Delete the SageMaker model and endpoint config this run created; say what remains."""
    kept = []
    for item in created:
        kind, _, name = item.rpartition(" ")
        if kind == "endpoint config":
            aws.find("deleting endpoint config", sm.delete_endpoint_config, EndpointConfigName=name)
        elif kind == "model":
            aws.find("deleting model", sm.delete_model, ModelName=name)
        else:
            kept.append(item)
    return ("Kept (rejected, for the record): " + ", ".join(kept) + ".") if kept else ""


def endpoint_status(sm: Any, endpoint: str) -> dict[str, Any] | None:
    """What the endpoint serves now: status, config, variants and their models."""
    desc = _describe_endpoint(sm, endpoint)
    if desc is None:
        return None
    config = aws.call(
        "describing endpoint config",
        sm.describe_endpoint_config,
        EndpointConfigName=desc["EndpointConfigName"],
    )
    return {
        "endpoint": endpoint,
        "status": desc["EndpointStatus"],
        "config": desc["EndpointConfigName"],
        "variants": [
            {
                "name": v["VariantName"],
                "model": v["ModelName"],
                "weight": v.get("InitialVariantWeight"),
            }
            for v in config["ProductionVariants"]
        ],
    }
