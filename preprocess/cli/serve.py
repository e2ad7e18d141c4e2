"""`preprocess serve STORE`: the read-only web UI (see :mod:`preprocess.serve`)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from preprocess.cli.app import app, err, fail, quiet_libraries
from preprocess.core import interrupts, names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, PreprocessError
from preprocess.core.interrupts import Interrupted


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command("serve")
def serve_cmd(
        store: Annotated[str, typer.Argument(help="The dataset: a local path or s3://BUCKET/PREFIX.",
                                             show_default=False)],
        host: Annotated[str, typer.Option(help="Address to listen on. The default answers this machine only; "
                                               "0.0.0.0 answers the network (e.g. in a container).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")] = 8080,
        log_level: Annotated[str, typer.Option(help="Server log level: warning, info (one line per request), "
                                                    "debug.")] = "warning",
        redact: Annotated[bool, typer.Option("--redact", help="Show no folder (sources by file name only), host "
                                                           "name or software version: for --host 0.0.0.0, where "
                                                           "every viewer on the network sees the pages.")] = False,
) -> None:
    """A read-only web UI for a dataset: branches and tags, each ref's commits, a commit's full
    provenance, a version's images (sort by similarity, quality or bytes; filter by status, spec and
    ranges), failures with their codes, one image beside its source with a zoom on what changed most,
    and the difference of two versions. Nothing is ever written: only GET and HEAD are answered.
    Ctrl-C (or SIGTERM) stops it.

    Exit codes: 0 stopped, 2 no dataset at STORE or the address cannot be used, 5 storage error."""
    from preprocess.serve import listen, open_catalog, run

    quiet_libraries()
    if log_level not in ("warning", "info", "debug"):
        fail(ConfigError(f"--log-level {log_level!r} is not one of warning, info, debug", code=ErrorCode.SERVE_OPTION,
                         hint="see `preprocess serve --help`"))
    try:
        cat = open_catalog(store)
        sock = listen(host, port)
    except PreprocessError as exc:
        fail(exc)
        return
    from preprocess.serve.server import url

    err.print(f"serving {escape(names.quote(store))} (read-only) at {url(sock)}  (Ctrl-C stops)", highlight=False,
              soft_wrap=True)
    previous = signal.signal(signal.SIGTERM, _stop)  # a container's stop: the same clean exit as Ctrl-C
    try:
        run(cat, sock, host=host, log_level=log_level, redact=redact)
    except (KeyboardInterrupt, Interrupted):  # the server re-raises the signal it stopped on
        interrupts.handled()  # stopping is what the signal asks of a server: exit 0, no interrupt line
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
    err.print("stopped", highlight=False)

