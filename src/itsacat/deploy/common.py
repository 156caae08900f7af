"""What every deploy target shares: the result, the error, content digests, the model version."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from itsacat.artifacts import MODEL_JSON
from itsacat.errors import ItsacatError, ModelError

Outcome = Literal["deployed", "unchanged", "rolled_back"]


class DeployError(ItsacatError):
    """A deploy that could not go ahead or was rolled back; the message says what still serves."""


@dataclass(frozen=True)
class DeployResult:
    """What a deploy did. `outcome` is "unchanged" when the same model was already live."""

    target: str
    outcome: Outcome
    model_version: str
    live: str  # what serves now: a URL, an endpoint config, a function version
    details: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        verb = {
            "deployed": "deployed",
            "unchanged": "already live, nothing changed:",
            "rolled_back": "rolled back;",
        }[self.outcome]
        return f"{self.target}: {verb} model {self.model_version} → {self.live}"


def model_version(model_dir: Path) -> str:
    """The version `model.json` declares (the weights hash), without loading the weights."""
    spec_path = Path(model_dir) / MODEL_JSON
    try:
        spec = json.loads(spec_path.read_text())
    except FileNotFoundError:
        raise ModelError(
            f"{spec_path} does not exist; run `dvc repro` first, or pass --model-dir "
            "pointing at a model directory"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{spec_path} is unreadable ({exc}); retrain with `dvc repro`") from None
    version = spec.get("version")
    if not isinstance(version, str) or not version:
        raise ModelError(f"{spec_path} has no version; retrain with `dvc repro`")
    return version


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes. The archives `serve.package` builds are byte-reproducible
    (sorted members, fixed dates and owners), so the same model and code give the same
    digest, and S3 keys and resource names derived from it are content-addressed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
