"""What every deploy target shares: the result, the error, content digests, the model version."""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
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


def archive_digest(path: Path) -> str:
    """SHA-256 over the members (names and contents) of a .tar.gz or .zip, ignoring timestamps.

    Two builds of the same model and code give the same digest even when the archive bytes
    differ (mtimes, gzip headers), so S3 keys and resource names derived from it are
    content-addressed and a repeated deploy finds what it already uploaded.
    """
    members: list[tuple[str, str]] = []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    members.append((info.filename, hashlib.sha256(zf.read(info)).hexdigest()))
    else:
        with tarfile.open(path, "r:*") as tf:
            for member in tf.getmembers():
                if member.isfile():
                    f = tf.extractfile(member)
                    assert f is not None
                    name = member.name.removeprefix("./")
                    members.append((name, hashlib.sha256(f.read()).hexdigest()))
    h = hashlib.sha256()
    for name, digest in sorted(members):
        h.update(f"{name}\0{digest}\n".encode())
    return h.hexdigest()
