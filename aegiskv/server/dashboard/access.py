"""Who may see the dashboard: nobody checks without an auth token; with one, the token or its cookie.

A browser cannot send an ``Authorization`` header on a plain page load, so the
operator opens ``/ui?token=<token>`` once: the node answers with a cookie and
a redirect to ``/ui``, which takes the token out of the address bar and the
history. The cookie holds a digest of the token, not the token: whoever reads
it (it is HttpOnly, so no script can) may view the dashboard but not use the
cluster. The digest is scrypt's, a deliberately slow and memory-hard function:
a leaked cookie is checked against one guess of the token per ~20-50 ms and
16 MiB, so a weak token is not cheap to recover from it. Every node of a
cluster derives the same cookie from the same token, which is what lets peers
accept each other's; the price is a fixed salt, so the function's cost is the
defence, not the salt's uniqueness. SameSite=Strict keeps other sites from riding on it. Peers fetching
``/status.json`` from each other send that cookie too, never the token: the
operations port may speak plain HTTP, and the token opens the whole cluster.

Nothing here logs: a token never reaches the log.
"""

from __future__ import annotations

import hashlib
import hmac

from aegiskv.net.http import HttpRequest

COOKIE_NAME = "aegis_dashboard"


class DashboardAccess:
    def __init__(self, token: str | None, secure: bool) -> None:
        self.required = bool(token)
        self._token = (token or "").encode()
        self._cookie = _cookie_for(self._token) if self.required else ""
        self._secure = secure  # the operations port speaks TLS: the cookie must never travel in clear

    def allows(self, request: HttpRequest) -> bool:
        """The request carries the token (bearer) or the dashboard's cookie, or no token is set."""
        if not self.required:
            return True
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(credential.strip()):
            return True
        cookie = _cookies(request.headers.get("cookie", "")).get(COOKIE_NAME)
        return cookie is not None and hmac.compare_digest(cookie.encode(), self._cookie.encode())

    def token_matches(self, candidate: str) -> bool:
        return self.required and hmac.compare_digest(candidate.encode(), self._token)

    def peer_headers(self) -> dict[str, str]:
        """What this node sends to fetch a peer's ``/status.json``: the cookie (same token, same digest)."""
        return {"Cookie": f"{COOKIE_NAME}={self._cookie}"} if self.required else {}

    def set_cookie(self) -> str:
        """The ``Set-Cookie`` value given for a right ``?token=``."""
        secure = "; Secure" if self._secure else ""
        return f"{COOKIE_NAME}={self._cookie}; Path=/; HttpOnly; SameSite=Strict{secure}"


def _cookie_for(token: bytes) -> str:
    """The cookie value a token gives: computed once per node start, at scrypt's interactive cost."""
    return hashlib.scrypt(token, salt=b"aegiskv dashboard cookie", n=2**14, r=8, p=1, dklen=32).hex()


def _cookies(header: str) -> dict[str, str]:
    pairs = (part.strip().partition("=") for part in header.split(";"))
    return {name: value for name, separator, value in pairs if separator}
