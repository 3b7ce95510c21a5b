"""Notifications cost nothing when no channel is configured (issue 12, target 3): a dispatcher pass runs
no SQL at all, so the checkpoint/decision hot path pays no extra fsync'd commit. Counted with an event
listener, not timed."""

from __future__ import annotations

import asyncio

from sqlalchemy import event

from saferun.notifications.dispatcher import Dispatcher
from saferun.notifications.settings import NotificationSettings
from saferun.storage.database import Database


def test_a_pass_without_channels_runs_no_sql(db: Database) -> None:
    settings = NotificationSettings()
    assert not settings.enabled
    statements: list[str] = []

    def record(conn, cursor, statement, params, context, executemany) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        report = asyncio.run(Dispatcher(db, settings).run_once())
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert statements == [] and report.fanned_out == 0
