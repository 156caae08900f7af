"""The smoke test: real photos through a freshly deployed model, before it takes traffic.

A photo passes when the endpoint answers with a well-formed verdict (a known label, a
probability in [0, 1]) from the model version that was just deployed, and with the expected
label where `deploy.smoke.expect` names one. Checking the version proves the new model, not
the old one, answered. The checks are pure functions of the response bytes; each target
supplies `invoke(photo_bytes, content_type) -> response_bytes`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsacat.config import SmokeParams
from itsacat.data import CLASSES
from itsacat.deploy.common import DeployError

log = logging.getLogger(__name__)

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}

Invoke = Callable[[bytes, str], bytes]


@dataclass(frozen=True)
class SmokeCase:
    photo: Path
    expect: str | None = None  # the label this photo must get, if any

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.photo.suffix.lower()]


@dataclass(frozen=True)
class SmokeResult:
    photo: str
    ok: bool
    detail: str  # the verdict when ok, the problem otherwise


@dataclass(frozen=True)
class SmokeReport:
    results: tuple[SmokeResult, ...]

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def summary(self) -> str:
        passed = sum(r.ok for r in self.results)
        lines = [f"smoke test: {passed}/{len(self.results)} photos passed"]
        lines += [f"  {'ok ' if r.ok else 'BAD'} {r.photo}: {r.detail}" for r in self.results]
        return "\n".join(lines)

    def first_problem(self) -> str:
        bad = [r for r in self.results if not r.ok]
        return f"{bad[0].photo}: {bad[0].detail}" if bad else ""


def select_cases(params: SmokeParams, base: Path = Path(".")) -> list[SmokeCase]:
    """The photos to send: `photos` if listed, else the JPEGs/PNGs in `photo_dir`."""
    if params.photos:
        paths = [base / p for p in params.photos]
        for path in paths:
            if not path.is_file():
                raise DeployError(
                    f"deploy.smoke.photos lists {path}, which does not exist; fix the path "
                    "in params.yaml (relative to the folder you run itsacat in)"
                )
            if path.suffix.lower() not in CONTENT_TYPES:
                raise DeployError(
                    f"deploy.smoke.photos lists {path}: only .jpg, .jpeg and .png are sent"
                )
    else:
        folder = base / params.photo_dir
        paths = sorted(
            p for p in folder.glob("*") if p.suffix.lower() in CONTENT_TYPES and p.is_file()
        )
        if not paths:
            raise DeployError(
                f"deploy.smoke.photo_dir {folder} holds no JPEG or PNG photos; point it at a "
                "folder of photos or list files in deploy.smoke.photos"
            )
    if params.max_photos:
        # photos with an expected label go first, so a cap never drops a real expectation
        paths.sort(key=lambda p: p.name not in params.expect)
        paths = paths[: params.max_photos]
    return [SmokeCase(p, params.expect.get(p.name)) for p in paths]


def _prediction(payload: Any) -> dict[str, Any] | None:
    """The first prediction in whatever shape the host wraps it (object, list, "predictions")."""
    if isinstance(payload, dict) and isinstance(payload.get("predictions"), list):
        payload = payload["predictions"]
    if isinstance(payload, list):
        payload = payload[0] if payload else None
    return payload if isinstance(payload, dict) else None


def check_response(body: bytes, expected_version: str, expect: str | None = None) -> str | None:
    """None when `body` is a good verdict from `expected_version`; otherwise the problem."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"answer is not JSON: {body[:80]!r}"
    pred = _prediction(payload)
    if pred is None:
        return f"answer holds no prediction: {str(payload)[:80]}"
    label, p, version = pred.get("label"), pred.get("probability"), pred.get("model_version")
    if label not in CLASSES:
        return f"label {label!r} is not one of {', '.join(CLASSES)}"
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        return f"probability {p!r} is not in [0, 1]"
    if math.isnan(p):
        return "probability is NaN"
    if version != expected_version:
        return f"answered by model {version!r}, expected the new model {expected_version!r}"
    if expect is not None and label != expect:
        return f"labelled {label} (P(cat) = {p:.3f}), expected {expect}"
    return None


def run_smoke(invoke: Invoke, cases: Sequence[SmokeCase], expected_version: str) -> SmokeReport:
    """Send every photo through `invoke` and check each answer. Transport errors fail a photo."""
    results = []
    for case in cases:
        try:
            body = invoke(case.photo.read_bytes(), case.content_type)
        except Exception as exc:  # any failure to get an answer is a failed photo, reported
            results.append(SmokeResult(case.photo.name, False, f"no answer: {exc}"))
            continue
        problem = check_response(body, expected_version, case.expect)
        if problem is None:
            pred = _prediction(json.loads(body)) or {}
            detail = f"{pred['label']} (P(cat) = {pred['probability']:.3f})"
            results.append(SmokeResult(case.photo.name, True, detail))
        else:
            results.append(SmokeResult(case.photo.name, False, problem))
    report = SmokeReport(tuple(results))
    log.info("%s", report.summary())
    return report
