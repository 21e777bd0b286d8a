"""The HTTP endpoint of `topo run --metrics-port` and `topo monitor --port`.

* `/metrics`: Prometheus text exposition of one registry (the runtime's `RuntimeMetrics`, plus
  the lag collector in `topo monitor`);
* `/healthz`: 200, or 503 with the reasons (liveness: see `topo.runtime.observe.health`);
* `/readyz`: 200 when ready, else 503 with the reasons.
Health bodies are JSON, so a human and a probe read the same answer.

Several processes: each process serves its own port. With `--metrics-port P` and N processes,
process i (0-based) listens on P + i (`process_port`); with `--metrics-port 0` every process
binds a free port and logs it. Counters are per process; Prometheus sums them with
`sum by (group, ...)`, which is how every generated rule and panel reads them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from topo.runtime.metrics import RuntimeMetrics
from topo.runtime.observe.health import RuntimeState, Verdict

log = logging.getLogger("topo.observe")

Check = Callable[[], Verdict]


def process_port(base: int, index: int) -> int:
    """Port of process `index` when a run starts several: base + index, or 0 (any free port)."""
    if base < 0 or base > 65535:
        raise ValueError(f"--metrics-port {base} is not a TCP port: use 0 (pick a free port) or 1..65535")
    if base == 0:
        return 0
    port = base + index
    if port > 65535:
        raise ValueError(f"--metrics-port {base} + process index {index} exceeds 65535: use a lower base port")
    return port


class ObservabilityServer:
    """A small threaded HTTP server; `start()` returns the bound port."""

    def __init__(self, registry: CollectorRegistry, *, ready: Check, healthy: Check, host: str = "0.0.0.0",
                 port: int = 0) -> None:
        self.registry = registry
        self.ready = ready
        self.healthy = healthy
        self.host = host
        self.requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the observability server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> int:
        handler = _handler_class(self)
        try:
            self._server = ThreadingHTTPServer((self.host, self.requested_port), handler)
        except OSError as exc:
            raise OSError(f"cannot listen on {self.host}:{self.requested_port} for /metrics: {exc.strerror}; "
                          "choose another --metrics-port, or 0 for any free port") from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="topo-metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics on %s/metrics (health %s/healthz, readiness %s/readyz)", self.url, self.url, self.url)
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


def _handler_class(server: ObservabilityServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(server.registry))
            elif path == "/healthz":
                self._verdict(server.healthy())
            elif path == "/readyz":
                self._verdict(server.ready())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics, /healthz or /readyz\n")

        def _verdict(self, verdict: Verdict) -> None:
            body = {"status": "ok" if verdict.ok else "fail", "reasons": list(verdict.reasons),
                    "details": verdict.details}
            self._send(200 if verdict.ok else 503, "application/json",
                       json.dumps(body, sort_keys=True).encode() + b"\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def serve_runtime(metrics: RuntimeMetrics, state: RuntimeState, *, port: int, host: str = "0.0.0.0",
                  stall_after: Mapping[str, float] | None = None) -> ObservabilityServer:
    """Start the endpoint of a `topo run` process. `stall_after` overrides, per group, the seconds
    of no progress (with events in flight) after which /healthz fails; the default is the group's
    `alerts.stalled.for`."""
    overrides = dict(stall_after or {})
    limits = {g.name: overrides.get(g.name, g.alerts.stalled_for_seconds) for g in metrics.topology.groups}

    def limit(group: str) -> float:
        return limits.get(group, metrics.topology.alerts.stalled_for_seconds)

    server = ObservabilityServer(metrics.registry, ready=state.readiness,
                                 healthy=lambda: state.liveness(metrics, limit), host=host, port=port)
    server.start()
    return server
