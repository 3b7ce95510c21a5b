"""SafeRun over HTTP: REST clients and an orchestrator that lets agent code run against a remote server.

from saferun import supervised
from saferun.client import RemoteOrchestrator

async with supervised(config, RemoteOrchestrator("http://127.0.0.1:8000", api_key=KEY)) as run:
    decision = await run.checkpoint("Review food order", parameters={"pizza_count": 100})
"""

from saferun.client.http import (
    AsyncSafeRunClient,
    BaseSafeRunClient,
    Call,
    Endpoints,
    RequestTimedOut,
    SafeRunClient,
    ServerError,
    ServerUnreachable,
    UnexpectedResponse,
    error_from_answer,
)
from saferun.client.remote import RemoteOrchestrator

__all__ = [
    "AsyncSafeRunClient",
    "BaseSafeRunClient",
    "Call",
    "Endpoints",
    "RemoteOrchestrator",
    "RequestTimedOut",
    "SafeRunClient",
    "ServerError",
    "ServerUnreachable",
    "UnexpectedResponse",
    "error_from_answer",
]
