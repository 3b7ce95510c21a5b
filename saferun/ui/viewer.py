"""Who is looking at the dashboard, and the CSRF rules its forms keep.

A page is viewed by one of:

- a **session** (signed in at ``/login`` with an API key): the cookie ``saferun_session`` is HttpOnly,
  SameSite=Lax and Secure when the request came over https; its CSRF token is stored with the session
  and every form carries it;
- an **API key** in the ``Authorization`` header (scripts): no ambient credential, so no CSRF token;
- nobody, in **open mode** (loopback only): forms carry a token that must equal the random
  ``saferun_csrf`` cookie (double submit; the cookie is HttpOnly and SameSite=Strict, so another site can
  neither read it nor make the browser send it with a cross-site form);
- nobody, in **keys mode**: pages redirect to ``/login``.

The API's own CSRF header check skips ``/ui`` paths because these form routes check the token themselves
(``check_csrf``), in every mode, before they change anything.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from saferun.api import deps
from saferun.api.local_guard import TRUSTED_FORWARD
from saferun.core.identity import DEFAULT_SESSION_TTL_SECONDS, SessionInfo
from saferun.domain.policy import Caller
from saferun.errors import Forbidden, Unauthorized

SESSION_COOKIE = deps.SESSION_COOKIE
OPEN_CSRF_COOKIE = "saferun_csrf"
LOGIN_CSRF_COOKIE = "saferun_login_csrf"
ACTING_AS_COOKIE = "saferun_acting_as"
ACTING_AS_MAX = 200


@dataclass(frozen=True)
class Viewer:
    mode: str  # "open" or "keys": the effective authentication mode
    caller: Caller | None  # None: nobody signed in, and keys are required
    session: SessionInfo | None = None
    via_key: bool = False
    csrf_token: str = ""
    minted_csrf: bool = False  # the open-mode token is new: the response must set its cookie
    acting_as: str = ""

    @property
    def who(self) -> Caller:
        """The caller the visibility rule judges; dashboard routes only run once someone is resolved."""
        if self.caller is None:
            raise Unauthorized("sign in first")
        return self.caller

    @property
    def signed_in(self) -> bool:
        return self.caller is not None and self.caller.authenticated

    @property
    def name(self) -> str:
        if self.session is not None:
            return self.session.display_name or self.session.caller.identity_id
        return self.caller.identity_id if self.caller else ""

    @property
    def roles(self) -> list[str]:
        return sorted(r.value for r in self.caller.roles) if self.caller else []


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def resolve(request: Request) -> Viewer:
    """The viewer of this request. Raises Unauthorized for an API key that is not accepted."""
    mode = deps.effective_mode(request)
    acting_as = request.cookies.get(ACTING_AS_COOKIE, "")[:ACTING_AS_MAX]
    service = deps.identities(request)
    key = _bearer(request)
    if key:
        found = service.caller_for_key(key)
        if found is None:
            raise Unauthorized("the API key is unknown, revoked or malformed")
        return Viewer(mode=mode, caller=found, via_key=True, acting_as=acting_as)
    cookie = request.cookies.get(deps.session_cookie_name(request))
    session = service.session(cookie) if cookie else None
    if session is not None:
        return Viewer(mode, session.caller, session, csrf_token=session.csrf_token, acting_as=acting_as)
    if mode == "open" and deps.not_local(request) is None:
        token = request.cookies.get(OPEN_CSRF_COOKIE, "")
        minted = len(token) < 32
        if minted:
            token = secrets.token_urlsafe(32)
        return Viewer(mode, Caller.open(), csrf_token=token, minted_csrf=minted, acting_as=acting_as)
    return Viewer(mode="keys", caller=None, acting_as=acting_as)


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another origin (``Origin`` or ``Referer``)."""
    # Sec-Fetch-Site is set by the browser itself (a page cannot forge it): anything but "same-origin" (or
    # "none", typed/bookmarked) is another site's post, even one on this host's other port ("same-site")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    source = request.headers.get("origin") or request.headers.get("referer")
    if source == "null":
        # an opaque origin: a sandboxed frame or data: URL, or a page sent with no-referrer (Firefox-like
        # browsers then post Origin: null); only the browser's own "same-origin" verdict lets it through
        return fetch_site == "same-origin"
    if not source:  # old clients and non-browser tools send neither; the token still has to match
        return True
    origin = urlsplit(source).netloc.lower()
    # behind a reverse proxy the browser's host may reach us as X-Forwarded-Host instead of Host, but only a
    # proxy named in SAFERUN_TRUSTED_PROXIES is believed: anyone else could pair a forged one with Origin
    hosts = {request.headers.get("host", "")}
    if request.scope.get(TRUSTED_FORWARD):
        hosts.update(request.headers.get("x-forwarded-host", "").split(","))
    return origin in {h.strip().lower() for h in hosts if h.strip()}


def check_csrf(request: Request, viewer: Viewer, submitted: str | None) -> None:
    """Refuse (403, rule ``csrf``) a form whose token does not match the viewer's."""
    if viewer.via_key:
        return  # a header credential is not sent by a browser on its own: nothing to forge
    if not same_origin(request):
        raise Forbidden("csrf", "refused by rule csrf: the form was posted from another site")
    if not submitted or not viewer.csrf_token or viewer.minted_csrf:
        raise Forbidden("csrf", "refused by rule csrf: the form's security token is missing or expired")
    if not hmac.compare_digest(submitted.encode(), viewer.csrf_token.encode()):
        raise Forbidden("csrf", "refused by rule csrf: the form's security token does not match")


def secure(request: Request) -> bool:
    return deps.is_tls(request)


def remember(request: Request, response: Response, viewer: Viewer) -> Response:
    """Set the cookies the viewer's state needs (a new open-mode CSRF token)."""
    if viewer.minted_csrf:
        response.set_cookie(
            OPEN_CSRF_COOKIE,
            viewer.csrf_token,
            httponly=True,
            samesite="strict",
            secure=secure(request),
            path="/",
        )
    return response


def set_session(request: Request, response: Response, cookie_value: str) -> None:
    response.set_cookie(
        deps.session_cookie_name(request),
        cookie_value,
        max_age=DEFAULT_SESSION_TTL_SECONDS,
        httponly=True,
        samesite="lax",
        secure=secure(request),
        path="/",
    )


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(
        deps.session_cookie_name(request), path="/", httponly=True, samesite="lax", secure=secure(request)
    )


def set_acting_as(request: Request, response: Response, name: str) -> None:
    response.set_cookie(
        ACTING_AS_COOKIE,
        name[:ACTING_AS_MAX],
        max_age=180 * 24 * 3600,
        httponly=True,
        samesite="lax",
        secure=secure(request),
        path="/",
    )


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def set_login_token(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=secure(request),
        path="/",
    )


def check_login_token(request: Request, submitted: str | None) -> None:
    """Login CSRF: the sign-in form's token must equal its cookie (so no site can sign you in as them)."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not same_origin(request):
        raise Forbidden("csrf", "refused by rule csrf: the form was posted from another site")
    if not submitted or not expected or not hmac.compare_digest(submitted.encode(), expected.encode()):
        raise Forbidden(
            "csrf", "refused by rule csrf: the sign-in form expired; reload the page and try again"
        )


def safe_next(target: str | None, default: str = "/approvals") -> str:
    """A local path to go to after signing in; anything else (another host, ``//host``) is the default."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
