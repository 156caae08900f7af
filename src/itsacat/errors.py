"""The itsacat exception hierarchy.

Every message names the bad value and says how to fix it. The CLI, the server and the
SageMaker entry point catch `ItsacatError` at their outermost layer and turn it into one
clear line, an HTTP 4xx, or `/opt/ml/output/failure`; anything else is a bug.
"""

from __future__ import annotations


class ItsacatError(Exception):
    """Base class for every error a user can cause and fix."""


class ConfigError(ItsacatError):
    """A bad value or key in params.yaml (or in SageMaker hyperparameters)."""


class DataError(ItsacatError):
    """A missing, malformed or inconsistent data file."""


class ImageError(ItsacatError):
    """Bytes that are not an image we can classify (corrupt, too large, wrong type)."""


class ModelError(ItsacatError):
    """A missing, incomplete or incompatible model directory."""


class AWSError(ItsacatError):
    """Bad AWS configuration or a cloud operation that failed in a way the user can fix."""
