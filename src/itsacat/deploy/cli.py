"""`itsacat deploy` and `itsacat endpoint`: the command-line edge of the deploy targets.

    itsacat deploy [--target local|sagemaker|lambda] [--model-dir model] [--params params.yaml]
    itsacat endpoint status [--target …]      what serves now
    itsacat endpoint stop                     stop the local endpoint (proxy and backends)

The target defaults to `deploy.target` in params.yaml (local). Clients for AWS are made
here, with `itsacat.aws.clients.client`, and passed to the target modules.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from itsacat.config import Params, load_params
from itsacat.deploy.common import DeployResult

TARGETS = ("local", "sagemaker", "lambda")


def run_deploy(target: str, model_dir: Path, params: Params) -> DeployResult:
    """Deploy `model_dir` to `target` with clients for the real (or AWS_ENDPOINT_URL) AWS."""
    if target == "local":
        from itsacat.deploy.local import deploy_local

        return deploy_local(model_dir, params)
    from itsacat.aws.clients import client

    region = params.aws.region
    with tempfile.TemporaryDirectory(prefix="itsacat-deploy-") as work:
        if target == "sagemaker":
            from itsacat.deploy.sagemaker import SageMakerClients, deploy_sagemaker

            clients = SageMakerClients(
                s3=client("s3", region),
                sagemaker=client("sagemaker", region),
                runtime=client("sagemaker-runtime", region),
                cloudwatch=client("cloudwatch", region),
            )
            return deploy_sagemaker(model_dir, params, clients, Path(work))
        from itsacat.deploy.lambda_ import LambdaClients, deploy_lambda

        lambda_clients = LambdaClients(client("lambda", region), client("cloudwatch", region))
        return deploy_lambda(model_dir, params, lambda_clients, Path(work))


def status(target: str, params: Params) -> dict[str, Any] | None:
    if target == "local":
        from itsacat.deploy.local import endpoint_status

        return endpoint_status(params)
    from itsacat.aws.clients import client

    if target == "sagemaker":
        from itsacat.deploy.sagemaker import endpoint_status as sagemaker_status

        return sagemaker_status(
            client("sagemaker", params.aws.region), params.deploy.sagemaker.endpoint_name
        )
    from itsacat.deploy.lambda_ import function_status

    p = params.deploy.aws_lambda
    return function_status(client("lambda", params.aws.region), p.function_name, p.alias)


def _cmd_deploy(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    target = args.target or params.deploy.target
    result = run_deploy(target, Path(args.model_dir), params)
    if args.json:
        print(json.dumps(result.__dict__, default=str))
    else:
        print(result.summary())
    return 0


def _cmd_endpoint(args: argparse.Namespace) -> int:
    params = load_params(args.params)
    target = args.target or params.deploy.target
    if args.action == "stop":
        if target != "local":
            print(
                f"itsacat: error: `endpoint stop` stops the local endpoint; a {target} "
                "endpoint is stopped in AWS (it is billed while it exists)",
                file=sys.stderr,
            )
            return 1
        from itsacat.deploy.local import stop_endpoint

        stopped = stop_endpoint(params)
        print("stopped " + (", ".join(stopped) if stopped else "nothing (nothing was running)"))
        return 0
    found = status(target, params)
    if args.json:
        print(json.dumps(found, default=str))
    elif found is None:
        print(f"{target}: nothing deployed")
    else:
        for key, value in found.items():
            if isinstance(value, Mapping):  # a record (the local backend): its fields, read
                value = ", ".join(f"{k} {v}" for k, v in value.items() if v is not None)
            print(f"{key}: {value}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=TARGETS, help="default: deploy.target in params.yaml")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "deploy",
        help="deploy model/ (smoke-tested, blue/green, rollback) to local|sagemaker|lambda",
    )
    p.add_argument("--model-dir", default="model")
    _common(p)
    p.set_defaults(func=_cmd_deploy)


def register_endpoint(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("endpoint", help="status of a deployed endpoint; stop the local one")
    p.add_argument("action", choices=("status", "stop"))
    _common(p)
    p.set_defaults(func=_cmd_endpoint)
