"""Plain ``def`` routes run in the thread pool once per request, not twice.

FastAPI runs a plain ``def`` endpoint in a worker thread (so its transactions never block the event loop),
then, for a route with a response model, validates the answer in a *second* worker-thread hop
(``fastapi.routing.serialize_response`` calls ``run_in_threadpool(field.validate, ...)`` whenever the
endpoint is not a coroutine). A hop costs the server ~0.1-0.2 ms of CPU (a thread handoff each way under
the GIL), and a remote agent's cycle is three such requests. ``OneHopRoute`` wraps a plain endpoint in a
coroutine that runs it in the thread pool itself; FastAPI then sees a coroutine and validates the answer
(a small dict: tens of µs) where it already is. The endpoint's signature, name and docstring are the
original's (``functools.wraps``), so dependencies, parameters, the OpenAPI document and error contexts
are unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool


def in_one_hop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` as a coroutine that runs it in the thread pool (a coroutine is returned as it is)."""
    if inspect.iscoroutinefunction(endpoint) or not inspect.isfunction(endpoint):
        return endpoint

    @functools.wraps(endpoint)
    async def run(*args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return run


class OneHopRoute(APIRoute):
    """An ``APIRoute`` whose plain ``def`` endpoint costs one thread hop per request (see the module)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, in_one_hop(endpoint), **kwargs)
