"""Cleanup hooks: what a reconciliation tidies up besides undoing steps.

A compensation undoes one recorded side effect (``register_step``); a cleanup hook releases what the
workflow holds as a whole: scheduled work to cancel, temporary data to remove. A hook is called with the
workflow id, may be sync or async, and returns a description of what it cleaned (JSON: the removed
paths, the cancelled job ids) for the report and the audit trail. Hooks should tolerate a repeat (a
reconciliation asked twice runs them twice), as compensations do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Cleanup = Callable[[str], Any] | Callable[[str], Awaitable[Any]]


class CleanupRegistry:
    """Name -> hook, run in registration order. One process-wide default (``cleanup_registry``)."""

    def __init__(self) -> None:
        self._hooks: dict[str, Cleanup] = {}

    def register(self, name: str, fn: Cleanup | None = None) -> Any:
        """``hooks.register("cancel_scheduled", fn)`` or ``@hooks.register("cancel_scheduled")``."""
        if not name or not isinstance(name, str):
            raise ValueError("a cleanup hook needs a non-empty name")

        def add(f: Cleanup) -> Cleanup:
            if name in self._hooks and self._hooks[name] is not f:
                log.warning("cleanup hook %r re-registered; the newest definition wins", name)
            self._hooks[name] = f
            return f

        return add(fn) if fn is not None else add

    def items(self) -> list[tuple[str, Cleanup]]:
        return list(self._hooks.items())

    def names(self) -> list[str]:
        return list(self._hooks)


cleanup_registry = CleanupRegistry()


def cleanup(name: str) -> Callable[[Cleanup], Cleanup]:
    """Decorator registering a cleanup hook on the default registry."""
    return cleanup_registry.register(name)  # type: ignore[no-any-return]
