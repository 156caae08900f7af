"""`itsacat aws …`: AWS set-up commands.

    itsacat aws bootstrap --github-repo OWNER/NAME     the DVC bucket + the CI role's policies

Registered through `COMMANDS` in itsacat/cli.py; boto3 is imported only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from itsacat.errors import ConfigError

log = logging.getLogger(__name__)


def _cmd_bootstrap(args: argparse.Namespace) -> int:
    from itsacat.aws.bootstrap import (
        ci_policy,
        ensure_bucket,
        github_repo_from_git,
        github_trust_policy,
        resolve_bucket,
    )
    from itsacat.aws.clients import aws_errors, client
    from itsacat.config import load_params

    params = load_params(args.params)
    aws = params.aws
    if args.region or args.bucket:
        aws = replace(aws, region=args.region or aws.region, bucket=args.bucket or aws.bucket)
        aws.check("command line")
    root = Path(args.params).resolve().parent
    bucket = resolve_bucket(aws, root)
    repo = args.github_repo or github_repo_from_git(root)
    if not repo:
        raise ConfigError(
            "cannot tell the GitHub repository (no github.com `origin` remote); "
            "pass --github-repo OWNER/NAME"
        )
    account = args.account
    if not account:
        with aws_errors("asking STS who these credentials belong to", aws.region):
            account = client("sts", aws.region).get_caller_identity()["Account"]
    trust = github_trust_policy(account, repo, args.branch)
    role = (
        args.execution_role_arn or aws.role_arn or (f"arn:aws:iam::{account}:role/{aws.prefix}-*")
    )
    policy = ci_policy(account, aws.region, bucket, aws.prefix, role)
    report = ensure_bucket(client("s3", aws.region), bucket, aws.region)
    if args.json:
        out: dict[str, Any] = {
            "bucket": asdict(report),
            "ci_policy": policy,
            "trust_policy": trust,
        }
        print(json.dumps(out, indent=2))
        return 0
    print("\n".join(report.lines()))
    print(
        "\nCI role policy (attach it to the role GitHub Actions assumes; "
        f"it may pass {role} to SageMaker and Lambda):"
    )
    print(json.dumps(policy, indent=2))
    print(
        f"\nCI role trust policy (GitHub OIDC: {repo}, pushes to {args.branch} and pull "
        "requests; first add the identity provider token.actions.githubusercontent.com "
        "with audience sts.amazonaws.com in IAM):"
    )
    print(json.dumps(trust, indent=2))
    return 0


def register(subparsers: Any) -> None:
    aws = subparsers.add_parser("aws", help="AWS set-up (bucket, CI role policies)")
    sub = aws.add_subparsers(dest="aws_command", required=True, metavar="AWS_COMMAND")
    p = sub.add_parser(
        "bootstrap",
        help="create the versioned, encrypted, private DVC bucket; print the CI role policies",
    )
    p.add_argument("--bucket", help="default: aws.bucket, else DVC remote s3's bucket")
    p.add_argument("--region", help="default: aws.region")
    p.add_argument("--github-repo", help="OWNER/NAME (default: the origin remote)")
    p.add_argument("--branch", default="main", help="the branch whose pushes deploy")
    p.add_argument("--account", help="AWS account id (default: the credentials' account)")
    p.add_argument("--execution-role-arn", help="the SageMaker/Lambda execution role CI may pass")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=_cmd_bootstrap)
