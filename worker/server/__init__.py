"""The HTTP API and the live relay: ``python -m worker serve`` (see :mod:`worker.commands.serve`)."""

from __future__ import annotations

from worker.server.app import build_app
from worker.server.auth import ServerToken, resolve_token
from worker.server.relay import Relay

__all__ = ("build_app", "Relay", "ServerToken", "resolve_token")
