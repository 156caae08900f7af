"""`itsacat endpoint status|stop`, registered on its own through `COMMANDS` (see `cli.py`)."""

from __future__ import annotations

from itsacat.deploy.cli import register_endpoint as register

__all__ = ["register"]
