"""``/healthz``, ``/readyz`` and ``/metrics`` over HTTP, on 127.0.0.1 unless told otherwise.

- ``/healthz`` (liveness): 200 while the daemon's main loop keeps turning (its heartbeat is
  younger than the liveness timeout) and its watcher threads live; else 503: restart it.
- ``/readyz`` (readiness): 200 once the store is open, the model loaded and the folder watched,
  until shutdown begins, except while the store cannot be written (then 503 with the reason:
  ``store.code``, ``store.error``, ``store.retry_in_s``); else 503.
- ``/metrics``: Prometheus text format.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError

Probe = Callable[[], tuple[bool, dict[str, Any]]]


class StatusServer:
    def __init__(self, host: str, port: int, *, live: Probe, ready: Probe, metrics: Callable[[], bytes]) -> None:
        probes = {"/healthz": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, metrics(), CONTENT_TYPE_LATEST)
                elif path in probes:
                    ok, detail = probes[path]()
                    body = json.dumps({"status": "ok" if ok else "unavailable", **detail}).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b'{"status": "not found"}', "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: no log
                return

        server_cls = _Server6 if ":" in host else ThreadingHTTPServer
        try:
            self._httpd = server_cls((host, port), Handler)
        except OSError as exc:  # in use (a second daemon?), not this machine's address, a privileged port
            raise ConfigError(f"--metrics {host}:{port} cannot be used: {exc.strerror or exc}",
                              code=ErrorCode.METRICS_ADDRESS,
                              hint="another process (a second daemon?) may listen there: pass another "
                                   "--metrics HOST:PORT, 127.0.0.1:0 for any free port, or off") from exc
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="watch-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6
