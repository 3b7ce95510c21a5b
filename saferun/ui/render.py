"""The dashboard's Jinja2 environment: templates from the package, autoescaped, with a few filters.

Every page is sent with a strict Content-Security-Policy (scripts and styles only from this server, no
inline code) and ``Cache-Control: no-store``: pages show decisions and money, and a back button must
not show a stale "pending" that is already decided.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from saferun import __version__
from saferun.domain.money import format_micro, to_micro
from saferun.domain.quorum import votes_line
from saferun.errors import SafeRunError
from saferun.ui.review import pretty, short

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

STATE_TONES = {
    "initialized": "neutral",
    "executing": "info",
    "awaiting_approval": "warn",
    "rolling_back": "warn",
    "settling": "info",
    "completed": "good",
    "failed": "bad",
}
LEVEL_TONES = {
    "critical": "bad",
    "high": "bad",
    "error": "bad",
    "danger": "bad",
    "medium": "warn",
    "warning": "warn",
    "warn": "warn",
    "low": "good",
    "info": "info",
}
RECOMMENDATION_TONES = {"approve": "good", "modify": "info", "reject": "bad"}


def when(value: Any) -> str:
    """A timestamp as ``2026-01-18 10:30:00 UTC``."""
    if not isinstance(value, datetime):
        return "" if value is None else str(value)
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: Any) -> str:
    if not isinstance(value, datetime):
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def state_label(value: Any) -> str:
    return str(getattr(value, "value", value)).replace("_", " ")


def state_tone(value: Any) -> str:
    return STATE_TONES.get(str(getattr(value, "value", value)), "neutral")


def level_tone(value: Any) -> str:
    return LEVEL_TONES.get(str(value).lower(), "neutral")


def amount(value: Any) -> str:
    """An exact amount (Decimal or text) as ``120.00`` / ``33.336667``."""
    try:
        return format_micro(to_micro(value))
    except (SafeRunError, ValueError, TypeError):  # a display helper never fails a page
        return str(value)


def percent(value: Any) -> str:
    try:
        return f"{float(value) * 100:.0f}%"
    except (TypeError, ValueError):
        return ""


def number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.6f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        short=short,
        pretty=pretty,
        money=format_micro,
        amount=amount,
        when=when,
        iso=iso,
        state_label=state_label,
        state_tone=state_tone,
        level_tone=level_tone,
        percent=percent,
        number=number,
        votes_line=votes_line,
    )
    env.globals.update(version=__version__, recommendation_tones=RECOMMENDATION_TONES)
    return env


ENV = _env()


def html(
    template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    body = ENV.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})
