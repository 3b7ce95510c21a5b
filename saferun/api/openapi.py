"""The OpenAPI document as SafeRun really answers: its error model, its error codes, its bearer keys.

FastAPI documents every 422 as its own ``HTTPValidationError`` (``{"detail": [...]}``), while SafeRun
answers ``{"detail": {"error", "message", "field", ...}}`` for every error (``api/server.py``), and it
documents none of the 401/403/404/409/413/503 answers a route can give. A client generated from the
schema (or Schemathesis checking answers against it) would then reject SafeRun's real answers. So the
generated document is rewritten once: one ``SafeRunError`` schema, the error codes declared on every
operation, and the ``Authorization: Bearer sr_key_…`` scheme (optional: open mode needs no key).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# JSON Schema cannot say "no NUL" except by pattern; every free string gets this one, so a client (or a
# fuzzer) generating from the schema never sends what the server refuses (api/input_guard.py)
NO_NUL = "^[^\\u0000]*$"
_FREE_STRING_KEYS = ("pattern", "format", "enum", "const")
_JSON_REF = {"$ref": "#/components/schemas/JsonValue"}
# "any JSON value" as SafeRun accepts it: no NUL in any string or key (NaN/Infinity are not JSON at all)
JSON_VALUE: dict[str, Any] = {
    "title": "JsonValue",
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {"type": "number"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": _JSON_REF},
        {"type": "object", "propertyNames": {"pattern": NO_NUL}, "additionalProperties": _JSON_REF},
    ],
}
_SHAPE_KEYS = ("type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "not")

ERROR_SCHEMA: dict[str, Any] = {
    "title": "SafeRunError",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "the error's class, e.g. InvalidInput"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the offending field (dotted path)"},
                "limit": {"type": "integer", "description": "the limit that was exceeded"},
                "errors": {"type": "array", "items": {"type": "object"}},
            },
            "additionalProperties": True,
        }
    },
}

# every operation can answer these: authentication and roles (keys mode), unknown ids, state conflicts,
# oversized or malformed bodies, and a store that is temporarily unavailable
ERROR_CODES = {
    "401": "No valid API key or session where one is required",
    "403": "Authenticated, but a policy rule (named in `rule`) refuses the action",
    "404": "Unknown workflow, snapshot, request, artifact or route",
    "409": "Valid in general, not in the current state",
    "413": "Request body over SAFERUN_MAX_BODY_BYTES",
    "422": "Invalid input; `field` names it (`limit` when a size or depth limit was exceeded)",
    "503": "The store is temporarily unavailable (disk full, read-only, locked); retry after Retry-After",
}


class MethodNotAllowed(StarletteHTTPException):
    """A 405 a route raises itself (a ``{x:path}`` GET reached with a POST-only sub-path), with its own
    ``Allow``; routing's 405s get ``Allow`` computed from every route matching the path."""

    def __init__(self, allow: tuple[str, ...]) -> None:
        super().__init__(status_code=405, detail="Method Not Allowed", headers={"Allow": ", ".join(allow)})


def install(app: FastAPI) -> None:
    """Replace ``app.openapi`` with the rewritten document (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = rewrite(doc)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Routing's own answers (unknown path, wrong method) in SafeRun's error shape; a 405 lists every
        method the path supports, not just those of the first route that matched it."""
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and not isinstance(exc, MethodNotAllowed):
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        content = {"detail": {"error": name, "message": str(exc.detail)}}
        return JSONResponse(status_code=exc.status_code, content=content, headers=headers)


def rewrite(doc: dict[str, Any]) -> dict[str, Any]:
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["SafeRunError"] = ERROR_SCHEMA
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key: sr_key_…"}
    }
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/SafeRunError"}}}
    for path_item in doc.get("paths", {}).values():
        for method, operation in path_item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for code, description in ERROR_CODES.items():
                responses[code] = {"description": description, "content": ref}
            operation.setdefault("security", [{}, {"bearer": []}])
            for parameter in operation.get("parameters", []):
                _no_nul(parameter.get("schema", {}))
    events = doc.get("paths", {}).get("/api/events", {}).get("get")
    if events:  # a Server-Sent Events stream, not JSON
        event = {"type": "object", "properties": {k: {"type": "string"} for k in ("event", "data", "id")}}
        events["responses"]["200"]["content"] = {"text/event-stream": {"schema": event}}
    _link_workflows(doc)
    for model in schemas.values():
        _no_nul(model)
    schemas["JsonValue"] = JSON_VALUE
    for path_item in doc.get("paths", {}).values():
        for operation in path_item.values():
            body = operation.get("requestBody", {}) if isinstance(operation, dict) else {}
            for media in body.get("content", {}).values():
                _no_nul(media.get("schema", {}))
    return doc


# operations that answer a new workflow's id (201) and the prefix of the operations that take one
_WORKFLOW_SOURCES = (("/api/workflows", "post"), ("/api/workflows/{workflow_id}/fork", "post"))
_WORKFLOW_TARGETS = "/api/workflows/{workflow_id}"


def _link_workflows(doc: dict[str, Any]) -> None:
    """OpenAPI links from each operation that creates a workflow to every operation on one
    (``$response.body#/workflow_id`` into the path), so a client generator, and Schemathesis' stateful
    phase, can follow create -> read/start/checkpoint/cancel/fork with a workflow that exists."""
    paths = doc.get("paths", {})
    targets = {
        operation["operationId"]: operation["operationId"]
        for path, item in paths.items()
        if path.startswith(_WORKFLOW_TARGETS)
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete") and "operationId" in operation
    }
    for path, method in _WORKFLOW_SOURCES:
        operation = paths.get(path, {}).get(method)
        created = (operation or {}).get("responses", {}).get("201")
        if created is None:
            continue
        created["links"] = {
            name: {"operationId": target, "parameters": {"path.workflow_id": "$response.body#/workflow_id"}}
            for name, target in sorted(targets.items())
        }


def _no_nul(schema: Any) -> None:
    """Add ``NO_NUL`` to every free string (and every free object's keys) under ``schema``, iteratively."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if node.get("type") == "string" and not any(k in node for k in _FREE_STRING_KEYS):
            node["pattern"] = NO_NUL
        if node.get("type") == "object" and node.get("additionalProperties", True) is not False:
            node.setdefault("propertyNames", {"pattern": NO_NUL})
            extra = node.get("additionalProperties", True)
            if extra is True or (isinstance(extra, dict) and _is_any(extra)):
                node["additionalProperties"] = dict(_JSON_REF)
        for container in ("properties",):
            for name, sub in list(node.get(container, {}).items()):
                if isinstance(sub, dict) and _is_any(sub):
                    node[container][name] = {**sub, "allOf": [dict(_JSON_REF)]}
        if isinstance(node.get("items"), dict) and _is_any(node["items"]):
            node["items"] = {**node["items"], "allOf": [dict(_JSON_REF)]}
        for key in ("anyOf", "oneOf"):
            for i, sub in enumerate(node.get(key, [])):
                if isinstance(sub, dict) and _is_any(sub):
                    node[key][i] = dict(_JSON_REF)
        for key, value in node.items():
            if key not in ("example", "examples", "default", "const", "enum"):
                stack.append(value)


def _is_any(schema: dict[str, Any]) -> bool:
    return not any(k in schema for k in _SHAPE_KEYS)


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """The methods of the most specific path template matching the request (``/api/approvals/submit``,
    not ``/api/approvals/{request_id}``), as the schema documents them per template."""
    by_template: dict[str, set[str]] = {}
    path = request.scope.get("path", "")
    for route in _leaf_routes(app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            template = getattr(route, "path_format", path)
            by_template.setdefault(template, set()).update(getattr(route, "methods", None) or ())
    if not by_template:
        return []
    best = max(by_template, key=lambda template: len(_PARAM.sub("", template)))
    return sorted(by_template[best])


_PARAM = re.compile(r"\{[^}]*\}")


def _leaf_routes(routes: Any) -> Any:
    """Every endpoint route, including those behind FastAPI's included-router wrappers (which carry no
    ``methods`` of their own: the 405's ``Allow`` was empty for every routed path)."""
    for route in routes:
        candidates = getattr(route, "_effective_candidates", None)
        if candidates is not None:
            yield from candidates
        else:
            yield route


DOCS_ASSETS_URL = "/docs/assets"
_DOCS_ASSETS_DIR = Path(__file__).parent / "docs_assets"
_DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "redoc.standalone.js": "text/javascript",
}


def include_docs(app: FastAPI) -> None:
    """``/openapi.json``, ``/docs`` (Swagger UI, with its ``/docs/oauth2-redirect``) and ``/redoc``, each
    behind ``deps.docs_caller``: in keys mode they need a key unless ``SAFERUN_PUBLIC_DOCS=true`` (issue 9).
    FastAPI's own docs routes are switched off in ``create_app`` because they take no dependency."""
    from fastapi import Depends
    from fastapi.openapi.docs import (
        get_redoc_html,
        get_swagger_ui_html,
        get_swagger_ui_oauth2_redirect_html,
    )
    from fastapi.responses import HTMLResponse

    from saferun.api.deps import docs_caller

    guard = [Depends(docs_caller)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon-32x32.png",
        )

    @app.get(DOCS_ASSETS_URL + "/{asset}", include_in_schema=False, dependencies=guard)
    def swagger_asset(asset: str) -> FileResponse:
        # Swagger UI 5.36.0 vendored from npm's swagger-ui-dist (4.x cannot read OpenAPI 3.1): offline docs.
        if asset not in _DOCS_ASSETS:
            raise StarletteHTTPException(status_code=404, detail=f"no docs asset {asset!r}")
        return FileResponse(_DOCS_ASSETS_DIR / asset, media_type=_DOCS_ASSETS[asset])

    @app.get("/docs/oauth2-redirect", include_in_schema=False, dependencies=guard)
    def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()  # static, but part of the docs: guarded like them

    @app.get("/redoc", include_in_schema=False, dependencies=guard)
    def redoc() -> HTMLResponse:
        # ReDoc 2.5.4 vendored from npm's `redoc` (bundles/redoc.standalone.js), no Google Fonts: offline
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon-32x32.png",
            with_google_fonts=False,
        )
