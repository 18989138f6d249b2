"""ASGI middleware that acts before a body is parsed: admission (429), size limit (413), bearer token (401/403).

Both are pure ASGI (not ``BaseHTTPMiddleware``) so that they see the raw request: the
token is checked before any byte of the body is read, and the body size both from
``Content-Length`` and while it streams (chunked uploads).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.routing import Match

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_body
from .security import QUERY_TOKEN_NAMES, token_matches

__all__ = ["AdmissionMiddleware", "BodyLimitMiddleware", "TokenMiddleware"]


async def _send_error(send: Send, status: int, message: str, headers: list | None = None,
                      field: str | None = None) -> None:
    body = json.dumps(error_body(status, message, field)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class AdmissionMiddleware:
    """Refuse ``POST /v1/encode`` with 429 and ``Retry-After`` while the encode queue is full, before reading the body.

    Under overload most requests are refused. A refusal here costs no body read, JSON parse or
    validation, and is held ``delay_s`` before it is sent: a client that retries at once without
    honouring ``Retry-After`` then cannot turn the refusals into a busy loop that takes the CPU
    (and the GIL the event loop shares with the model thread) from the requests being served.
    ``refusal()`` returns the 429 to send, or ``None``.
    """

    def __init__(self, app: ASGIApp, path: str, refusal: Callable[[], Any], delay_s: float) -> None:
        self.app = app
        self.path = path
        self.refusal = refusal
        self.delay_s = delay_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self.path:
            refused = self.refusal()
            if refused is not None:
                await asyncio.sleep(self.delay_s)
                await _send_error(send, refused.status, str(refused),
                                  [(k.lower().encode(), v.encode()) for k, v in refused.headers.items()])
                return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"body: larger than the limit of {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _send_error(send, 413, message, field="body")
            return
        seen = 0
        started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal seen, refused
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes and not refused:
                    refused = True
                    if not started:
                        await _send_error(send, 413, message, field="body")
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            return msg

        async def guarded_send(msg: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        await self.app(scope, limited_receive, guarded_send)


class TokenMiddleware:
    """Require ``Authorization: Bearer <token>`` on the protected routes, before the body is read.

    ``protected`` is a list of ``(method regex, path regex)``. Only requests that reach a
    declared route and method are checked (others get their 404 or 405 from the router); a
    credential in the query string is refused (401). With no token configured the protected
    routes are disabled (403).
    """

    def __init__(self, app: ASGIApp, token: str | None, protected: list[tuple[str, str]]) -> None:
        self.app = app
        self.token = token
        self.protected = [(re.compile(m), re.compile(p)) for m, p in protected]

    def _needs_token(self, scope: Scope) -> bool:
        if scope["type"] != "http" or not any(m.fullmatch(scope["method"]) and p.fullmatch(scope["path"])
                                              for m, p in self.protected):
            return False
        router = getattr(scope.get("app"), "router", None)
        return router is None or any(route.matches(scope)[0] == Match.FULL for route in router.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._needs_token(scope):
            query = {k.lower() for k, _ in parse_qsl(scope.get("query_string", b"").decode("latin-1"))}
            if query & QUERY_TOKEN_NAMES:
                await _send_error(send, 401, "tokens in the query string are refused; send 'Authorization: Bearer "
                                             "<token>'", [(b"www-authenticate", b"Bearer")])
                return
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                await _send_error(send, 401, "this route needs 'Authorization: Bearer <token>'",
                                  [(b"www-authenticate", b"Bearer")])
                return
            if self.token is None:
                await _send_error(send, 403, "state-changing routes are disabled: the server has no SPARSEFINDER_TOKEN")
                return
            if not token_matches(given.strip(), self.token):
                await _send_error(send, 403, "wrong bearer token")
                return
        await self.app(scope, receive, send)
