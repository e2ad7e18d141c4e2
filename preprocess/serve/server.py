"""Running the web UI: listen on HOST:PORT (127.0.0.1 unless told otherwise) and serve with uvicorn
until Ctrl-C or SIGTERM."""

from __future__ import annotations

import socket

import uvicorn

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError
from preprocess.serve.app import create_app
from preprocess.serve.catalog import Catalog
from preprocess.store import history, refs

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def open_catalog(location: str) -> Catalog:
    """The store, checked before anything listens: ConfigError STORE_MISSING (exit 2), StorageError
    STORE_FORMAT when it holds something preprocess did not write, STORE_IO (exit 5)."""
    cat = Catalog(location)
    history.check_format(cat.repo, refs.resolve_ref(cat.repo, "main"))
    return cat


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (ConfigError SERVE_LISTEN when the address cannot be used)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}", code=ErrorCode.SERVE_LISTEN,
                          hint="give --host an address of this machine (127.0.0.1, 0.0.0.0, ...)") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code=ErrorCode.SERVE_LISTEN,
                          hint="choose another --port (or stop what uses it)") from None
    sock.set_inheritable(True)
    return sock


def url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def make_server(cat: Catalog, *, host: str, log_level: str = "warning", redact: bool = False) -> uvicorn.Server:
    """The uvicorn server for ``cat``. On a loopback address only loopback Host names are answered
    (a web page elsewhere cannot reach the store through DNS rebinding). ``redact``: see ``create_app``."""
    app = create_app(cat, hosts=LOOPBACK if host in LOOPBACK else None, redact=redact)
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level in ("info", "debug"),
                            timeout_graceful_shutdown=5, server_header=False)
    return uvicorn.Server(config)


def run(cat: Catalog, sock: socket.socket, *, host: str, log_level: str = "warning", redact: bool = False) -> None:
    """Serve on ``sock`` until interrupted (Ctrl-C; the caller maps SIGTERM to it)."""
    make_server(cat, host=host, log_level=log_level, redact=redact).run(sockets=[sock])
