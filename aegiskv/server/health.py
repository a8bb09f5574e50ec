"""The operations port: GET /health, /ready and /metrics, and the dashboard, served by the reactor.

``/health`` answers 200 while the process runs, with the body ``ok``, or
``degraded: writes refused: <why>`` while the node cannot write its log
(still 200: the node serves reads, and a supervisor that restarted it on a
full disk would take the reads down too); ``/ready`` 200 while the node
serves clients and 503 before it listens and while it drains; ``/metrics``
the Prometheus text format. Rendering metrics walks every counter and takes the
node lock, so it runs in the worker pool, not on the reactor. Every other path
is the dashboard's to answer (aegiskv.server.dashboard.routes), behind the auth
token when one is set; the three above stay open to supervisors and Prometheus.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from loguru import logger

from aegiskv.net.http import HttpError, HttpRequest, HttpResponse, RequestReader, encode_response
from aegiskv.net.reactor import ConnectionHandler, Transport
from aegiskv.server.dashboard.routes import Dashboard


class HealthProtocol(ConnectionHandler):
    def __init__(
        self,
        is_ready: Callable[[], bool],
        render_metrics: Callable[[], tuple[bytes, str]],
        storage_failure: Callable[[], str | None] = lambda: None,
        dashboard: Dashboard | None = None,
    ) -> None:
        self._reader = RequestReader()
        self._is_ready = is_ready
        self._render_metrics = render_metrics
        self._storage_failure = storage_failure
        self._dashboard = dashboard
        self._answered = False
        self._in_pool = False
        self.transport: Transport | None = None

    def connection_made(self, transport: Transport) -> None:
        self.transport = transport

    def busy(self) -> bool:
        return self._in_pool

    def partial_request(self) -> bool:
        return not self._answered and self._reader.buffered > 0

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._reader.receive_data(data)
        try:
            request = self._reader.next_request()
        except HttpError as error:
            self._respond(error.status, f"{error}\n".encode())
            return
        if request is not None:
            self._answered = True
            self._handle(request)

    def _handle(self, request: HttpRequest) -> None:
        head_only = request.method == "HEAD"
        if request.method not in ("GET", "HEAD"):
            self._respond(405, b"only GET and HEAD\n")
        elif request.path == "/health":
            failure = self._storage_failure()
            body = b"ok\n" if failure is None else f"degraded: writes refused: {failure}\n".encode()
            self._respond(200, body, head_only=head_only)
        elif request.path == "/ready":
            if self._is_ready():
                self._respond(200, b"ready\n", head_only=head_only)
            else:
                self._respond(503, b"not ready\n", head_only=head_only)
        elif request.path == "/metrics":
            self._serve_metrics(head_only)
        else:
            self._serve_dashboard(request, head_only)

    def _serve_dashboard(self, request: HttpRequest, head_only: bool) -> None:
        answer = self._dashboard.handle(request) if self._dashboard is not None else None
        if answer is None:
            dashboard = ", /ui" if self._dashboard is not None else ""
            self._respond(404, f"try /health, /ready, /metrics{dashboard}\n".encode())
        elif isinstance(answer, HttpResponse):
            self._respond(answer.status, answer.body, answer.content_type, head_only, answer.headers)
        else:
            transport = self.transport
            assert transport is not None
            self._in_pool = True
            transport.pause_reading()

            def done(response: HttpResponse) -> None:
                self._in_pool = False
                self._respond(response.status, response.body, response.content_type, head_only, response.headers)

            answer(done)

    def _serve_metrics(self, head_only: bool) -> None:
        transport = self.transport
        assert transport is not None
        self._in_pool = True
        transport.pause_reading()

        def done(result: tuple[bytes, str] | None, error: BaseException | None) -> None:
            self._in_pool = False
            if error is not None or result is None:
                logger.error("rendering /metrics failed: {}", error)
                self._respond(503, b"metrics unavailable\n")
            else:
                body, content_type = result
                self._respond(200, body, content_type, head_only)

        transport.submit(self._render_metrics, done)

    def _respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        head_only: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        transport = self.transport
        if transport is None or transport.closed:
            return
        self._answered = True
        transport.write(encode_response(status, body, content_type, head_only, headers))
        transport.close()
