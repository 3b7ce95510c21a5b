"""Notices when a decision waits, is decided, expires or is cancelled: signed webhooks and e-mail.

Design: a **transactional outbox**. The engine writes a ``notifications`` row in the same transaction as
the change it announces, at the two places requests change (``Orchestrator._open_request`` and
``core.decisions.decide``, which expiry and cancellation also go through). A notice therefore exists
exactly when its change committed: a crash right after the commit loses nothing, a rolled-back change
announces nothing, and no cursor over another table (whose ids PostgreSQL hands out out of commit
order, see ``core/events``) has to be kept right. The server's ``Dispatcher`` (``dispatcher.py``, a task
beside the sweep) fans notices out to the channels configured where it runs (``settings.py``) and
delivers them with leases, retries and backoff, from every replica safely.

Modules: ``settings`` (environment, checked at start), ``messages`` (the JSON, Slack and e-mail bodies,
the signature), ``channels`` (httpx and smtplib senders), ``links`` (single-use decision links),
``dispatcher`` (fan-out and delivery). The table rows live in ``saferun.storage.notifications``; the
link's page is ``saferun.ui.decision_links``. User documentation: ``docs/notifications.md``.
"""
