"""Which dashboard path answers what, behind the token gate (aegiskv.server.dashboard.access).

``/`` redirects to ``/ui``; ``/ui`` is the page, ``/ui/dashboard.js`` and
``/ui/dashboard.css`` its parts (package data, read once at start-up);
``/status.json`` this node's figures; ``/cluster.json`` the cluster as this
node sees it. Answers that need the worker pool come back as a
:data:`Deferred`, which the operations port runs (aegiskv.server.health).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from aegiskv.net.http import HttpRequest, HttpResponse
from aegiskv.net.workers import Done, Task
from aegiskv.server.dashboard.access import DashboardAccess

# Started on the reactor thread with a callback that the answer is given to, on the reactor thread.
Deferred = Callable[[Callable[[HttpResponse], None]], None]
Submit = Callable[[Task, Done], None]

_ASSETS = {
    "/ui": ("index.html", "text/html; charset=utf-8"),
    "/ui/": ("index.html", "text/html; charset=utf-8"),
    "/ui/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/ui/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_JSON = "application/json"
# Read-only pages that must not be framed, cached or told where they were linked from.
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
}
_NEEDS_TOKEN = (
    b"This dashboard needs the node's auth token: open /ui?token=<token> once (a cookie keeps it),\n"
    b"or send 'Authorization: Bearer <token>'.\n"
)
PATHS = ("/", *_ASSETS, "/status.json", "/cluster.json")


def load_assets() -> dict[str, bytes]:
    """The page's files from the package; a missing one is a broken install and fails start-up."""
    static = resources.files("aegiskv.server.dashboard") / "static"
    return {name: (static / name).read_bytes() for name, _ in set(_ASSETS.values())}


class Dashboard:
    def __init__(
        self,
        access: DashboardAccess,
        status: Callable[[], dict[str, Any]],
        cluster: Callable[[Callable[[bytes | None], None]], None],
        submit: Submit,
    ) -> None:
        self._access = access
        self._status = status  # worker thread
        self._cluster = cluster  # reactor thread
        self._submit = submit
        self._files = load_assets()

    def handle(self, request: HttpRequest) -> HttpResponse | Deferred | None:
        """The answer to a GET or HEAD of ``request.path``; None for a path that is not the dashboard's."""
        path = request.path
        if path not in PATHS:
            return None
        if self._access.required and "token" in request.query and path in ("/", "/ui", "/ui/"):
            if not self._access.token_matches(request.query["token"]):
                return _response(401, _NEEDS_TOKEN)
            # Trade the token for the cookie, and take it out of the address bar.
            return _response(303, b"", headers={"Location": "/ui", "Set-Cookie": self._access.set_cookie()})
        if not self._access.allows(request):
            return _response(401, _NEEDS_TOKEN)
        if path == "/":
            return _response(303, b"", headers={"Location": "/ui"})
        if path in _ASSETS:
            name, content_type = _ASSETS[path]
            return _response(200, self._files[name], content_type)
        if path == "/status.json":
            return self._deferred_status
        return self._deferred_cluster

    def _deferred_status(self, answer: Callable[[HttpResponse], None]) -> None:
        def done(body: bytes | None, error: BaseException | None) -> None:
            if error is not None or body is None:
                answer(_response(503, f"status unavailable: {error!r}\n".encode()))
            else:
                answer(_response(200, body, _JSON))

        self._submit(lambda: json.dumps(self._status()).encode(), done)

    def _deferred_cluster(self, answer: Callable[[HttpResponse], None]) -> None:
        def done(body: bytes | None) -> None:
            if body is None:
                answer(_response(503, b"cluster view unavailable (see the node's log)\n"))
            else:
                answer(_response(200, body, _JSON))

        self._cluster(done)


def _response(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", headers: dict[str, str] | None = None
) -> HttpResponse:
    return HttpResponse(status, body, content_type, {**_HEADERS, **(headers or {})})
