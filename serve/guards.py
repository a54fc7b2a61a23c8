"""Checks every request passes before the app parses it: the API key (401), then the body size (413).

A pure ASGI middleware, so a refused request is answered before its body is read (for the key) or before
more than `max_body_bytes` of it is held (for the size): a client cannot make a replica parse a huge body.
Its settings are the `guard` attribute of the Serve replica's deployment object, set from its config (Serve
serves a frozen copy of the FastAPI app, so the app's own state is not the replica's to set).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from ray import serve
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass(frozen=True)
class GuardSettings:
    max_body_bytes: int
    api_key: str | None = None  # None: no key needed
    open_paths: frozenset[str] = field(default_factory=lambda: frozenset({"/health"}))  # never need the key


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: GuardSettings = serve.get_replica_context().servable_object.guard
        if settings.api_key is not None and _route_path(scope) not in settings.open_paths:
            if not _has_key(scope, settings.api_key):
                await _refuse(scope, receive, send, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'")
                return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
            await _refuse(scope, receive, send, 413, _too_large(settings.max_body_bytes))
            return
        body = bytearray()
        while True:  # read the whole body up to the limit (chunked bodies declare no length)
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > settings.max_body_bytes:
                await _refuse(scope, receive, send, 413, _too_large(settings.max_body_bytes))
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands the app the already-read body, then passes through (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _route_path(scope: Scope) -> str:
    """The path inside the app: Serve mounts an app under its route prefix (the scope's root_path)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _has_key(scope: Scope, key: str) -> bool:
    scheme, _, given = (_header(scope, b"authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


def _too_large(limit: int) -> str:
    return f"request body larger than {limit} bytes"


async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    headers: dict[str, Any] = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)
