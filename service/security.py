"""The bearer token: which routes need it, how it is checked (constant time) and how it is documented.

State-changing routes and job state need ``Authorization: Bearer <token>``. The check runs
in :class:`~.middleware.TokenMiddleware` before any byte of the body is read; a token in
the query string is never accepted (query strings end up in logs and browser history).
"""

from __future__ import annotations

import hmac

__all__ = ["BEARER", "PROTECTED", "QUERY_TOKEN_NAMES", "token_matches"]

#: (method, path) patterns that change state or reveal jobs.
PROTECTED = [("POST|DELETE", r"/v1/predictors(/.*)?"), ("GET", r"/v1/jobs(/.*)?")]
#: Query parameters that look like a credential: refused outright on protected routes.
QUERY_TOKEN_NAMES = frozenset({"token", "access_token", "api_key", "apikey", "key", "authorization"})
#: ``openapi_extra`` of a protected route (the scheme is declared in :func:`~.app.create_app`).
BEARER = {"security": [{"bearer": []}]}
SCHEME = {"bearer": {"type": "http", "scheme": "bearer"}}


def token_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a presented token with the configured one."""
    return hmac.compare_digest(given.encode(), expected.encode())
