"""Outbound HTTP to peers follows no redirect, and says so without secrets.

SafeRun calls three kinds of peer: the x402 facilitator (``payments.facilitator``), a remote x402 platform
(``platform.remote``) and webhook receivers (``notifications.channels``). Each request carries something a
peer must not be able to send elsewhere: an API key or the facilitator's ``user:password@``, a signed
payment, a signed notice. httpx would re-send a request to whatever ``Location`` a peer names (the SDK's
facilitator client turns that on), so every client here runs with ``follow_redirects=False`` and a 3xx
answer is refused as ``RedirectRefused`` (502): logged once as a warning and raised, with the peer's URL
and the ``Location`` masked (``mask_url``: no userinfo, no query values), so neither a log line nor an
error body can carry a password or token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from saferun.errors import RedirectRefused

log = logging.getLogger(__name__)

MASK = "***"


def mask_url(url: str | httpx.URL | None) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` and every query value by ``***``.

    Text that is not a URL is returned as is when it holds no ``@``, else only what follows the last
    ``@`` (a half-parsed credential must not leak either)."""
    text = "" if url is None else str(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text.rsplit("@", 1)[-1]
    if "@" in text and not parts.netloc:
        return text.rsplit("@", 1)[-1]
    netloc = parts.netloc
    if "@" in netloc:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{MASK}@{host}" + (f":{port}" if port else "")
    query = parts.query
    if query:
        query = urlencode([(k, MASK) for k, _ in parse_qsl(query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def refusal(peer: str, response: httpx.Response) -> RedirectRefused:
    """The error for ``response`` (a 3xx from ``peer``), logged as a warning without secrets."""
    url = mask_url(response.request.url)
    location = mask_url(response.headers.get("location")) or "(no Location)"
    status = response.status_code
    log.warning(
        "%s %s answered HTTP %d redirect to %s; refused (redirects are not followed)",
        peer,
        url,
        status,
        location,
    )
    return RedirectRefused(
        f"the {peer} at {url} answered HTTP {status}, a redirect to {location}; SafeRun follows no "
        "redirect from a peer: configure the final URL",
        peer=peer,
        url=url,
        status_code=status,
        location=location,
    )


def refuse_redirects(peer: str) -> Callable[[httpx.Response], None]:
    """An httpx ``response`` event hook (sync client) raising ``RedirectRefused`` on any 3xx."""

    def hook(response: httpx.Response) -> None:
        if response.is_redirect or 300 <= response.status_code < 400:
            raise refusal(peer, response)

    return hook


def refuse_redirects_async(peer: str) -> Callable[[httpx.Response], Awaitable[None]]:
    """The same hook for an ``httpx.AsyncClient``."""
    check = refuse_redirects(peer)

    async def hook(response: httpx.Response) -> None:
        check(response)

    return hook
