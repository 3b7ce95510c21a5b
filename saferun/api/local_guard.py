"""Rebinding-proof local mode and trusted forwarding headers (issue 9, finding 3).

Open mode trusts "whoever reaches the loopback socket". Two things break that trust:

- **DNS rebinding**: a page on ``evil.example`` whose name resolves to 127.0.0.1 reaches the socket with
  ``Host: evil.example``. So in open mode only loopback names/addresses *for this server's port*
  (``localhost``, ``127.x``, ``[::1]``, ``*.localhost``) or a name in ``SAFERUN_ALLOWED_HOSTS`` are served;
  any other ``Host`` is 421 naming the header.
- **A proxy on the same host**: every request then arrives from 127.0.0.1. Forwarding headers
  (``Forwarded``, ``X-Forwarded-For``/``-Proto``/``-Host``, ``X-Real-IP``) are believed only from a peer
  in ``SAFERUN_TRUSTED_PROXIES``; from such a peer the client address and scheme are taken from them
  (the rightmost address the proxy did not get from the client). From any other peer they are not
  believed, and the request is marked so open mode refuses it (it came through a proxy we cannot vouch
  for, so it is not known to be local); a key still works.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

FORWARDING = (b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-real-ip")
UNTRUSTED_FORWARD = "saferun.untrusted_forward"  # scope key: forwarding headers from an untrusted peer
TRUSTED_FORWARD = "saferun.trusted_forward"  # scope key: the peer is a trusted proxy
IN_PROCESS_NAMES = {"test", "testserver", "testclient"}  # ASGI test transports: no socket at all


def split_list(value: str) -> list[str]:
    return [item.strip().lower() for item in value.split(",") if item.strip()]


@functools.lru_cache(maxsize=1024)  # asked on every request for the same few socket addresses
def is_loopback_address(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(value: str, scheme: str) -> tuple[str, int | None]:
    """``Host`` header -> (name, port); the scheme's default port when none is written."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:8000
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, port = value.split(":")
    else:
        name, port = value, ""
    if not port:
        return name, 443 if scheme in ("https", "wss") else 80
    return name, int(port) if port.isdigit() else None


def host_allowed(host_header: str, scope: Scope, allowed: list[str]) -> bool:
    """Open mode's ``Host`` rule: a loopback name for this server's own port, or an allowlisted name."""
    if not host_header:
        return False
    name, port = split_host(host_header, scope.get("scheme", "http"))
    if host_header.strip().lower() in allowed or name in allowed:
        return True
    server = scope.get("server")
    if server is None:
        return is_loopback_address(name)
    if name in IN_PROCESS_NAMES:
        return server[0] == name  # only an in-process transport names its "server" so
    return is_loopback_address(name) and (port is None or server[1] is None or port == server[1])


def _forwarded_client(headers: dict[bytes, bytes], trusted: list[str]) -> str | None:
    chain: list[str] = []
    if b"x-forwarded-for" in headers:
        chain = [h.strip() for h in headers[b"x-forwarded-for"].decode("latin-1").split(",")]
    elif b"forwarded" in headers:
        for part in headers[b"forwarded"].decode("latin-1").split(","):
            for pair in part.split(";"):
                key, _, val = pair.strip().partition("=")
                if key.lower() == "for":
                    chain.append(val.strip('"').strip("[]").split("]")[0])
    elif b"x-real-ip" in headers:
        chain = [headers[b"x-real-ip"].decode("latin-1").strip()]
    for addr in reversed(chain):  # the client can prepend anything; only the proxies' own entries count
        if addr and addr.lower() not in trusted:
            return addr
    return None


class LocalGuard:
    """ASGI middleware applying the two rules above; ``open_mode(scope)`` says whether open mode applies."""

    def __init__(self, app: ASGIApp, *, fastapi_app: Any, allowed_hosts: str, trusted_proxies: str) -> None:
        self.app, self.fastapi_app = app, fastapi_app
        self.allowed = split_list(allowed_hosts)
        self.trusted = split_list(trusted_proxies)

    def open_mode(self, scope: Scope) -> bool:
        if self.fastapi_app.state.auth_mode == "keys":
            return False
        # open or auto on a loopback socket; open on any other address is refused by deps.not_local (401)
        server = scope.get("server")
        return server is None or server[0] in IN_PROCESS_NAMES or is_loopback_address(server[0])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if any(name in headers for name in FORWARDING):
            peer = (scope.get("client") or ("",))[0]
            if peer and peer.lower() in self.trusted:
                scope[TRUSTED_FORWARD] = True
                client = _forwarded_client(headers, self.trusted)
                if client:
                    scope["client"] = (client, 0)
                proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip()
                if proto in ("http", "https"):
                    scope["scheme"] = proto
            else:
                scope[UNTRUSTED_FORWARD] = True
        if self.open_mode(scope):
            host = headers.get(b"host", b"").decode("latin-1")
            if scope.get(TRUSTED_FORWARD) and b"x-forwarded-host" in headers:
                host = headers[b"x-forwarded-host"].decode("latin-1").split(",")[0]
            if not host_allowed(host, scope, self.allowed):
                await _misdirected(host, scope, send)
                return
        await self.app(scope, receive, send)


async def _misdirected(host: str, scope: Scope, send: Send) -> None:
    port = (scope.get("server") or ("", "?"))[1]
    message = (
        f"Host {host[:100]!r} is not this server: open mode answers only loopback names "
        f"(localhost, 127.0.0.1, [::1]) on port {port}; add a name to SAFERUN_ALLOWED_HOSTS to serve it"
    )
    if scope["type"] != "http":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps(
        {"detail": {"error": "MisdirectedRequest", "message": message, "field": "Host"}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 421, "headers": headers})
    await send({"type": "http.response.body", "body": body})
