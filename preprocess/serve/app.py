"""The ASGI application of `preprocess serve`: routes (GET and HEAD only), templates, the
read-only guard and error pages."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InputError, InternalError, NotFoundError, PreprocessError
from preprocess.core.units import size
from preprocess.rows.provenance import SpecInfo
from preprocess.serve import media, pages
from preprocess.serve.catalog import Catalog
from preprocess.store.diff import SpecBrief
from preprocess.store.history import engine_words

HERE = Path(__file__).parent
READ_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
log = logging.getLogger("preprocess.serve")

ROUTES = [
    Route("/", pages.refs_page, methods=["GET"]),
    Route("/log", pages.log_page, methods=["GET"]),
    Route("/commits/{ref:path}", pages.commit_page, methods=["GET"]),
    Route("/items", pages.items_page, methods=["GET"]),
    Route("/failures", pages.failures_page, methods=["GET"]),
    Route("/diff", pages.diff_page, methods=["GET"]),
    Route("/charts", pages.charts_page, methods=["GET"]),
    Route("/items.zip", media.items_zip, methods=["GET"]),
    Route("/items.csv", media.items_csv, methods=["GET"]),
    Route("/spec.toml", media.spec, methods=["GET"]),
    Route("/snapshots/{snapshot}/items/{row:int}", pages.item_page, methods=["GET"]),
    Route("/snapshots/{snapshot}/items/{row:int}/thumb", media.thumbnail, methods=["GET"]),
    Route("/snapshots/{snapshot}/items/{row:int}/stored", media.stored, methods=["GET"]),
    Route("/snapshots/{snapshot}/items/{row:int}/download", media.download, methods=["GET"]),
    Route("/snapshots/{snapshot}/items/{row:int}/compare/{view}", media.comparison, methods=["GET"]),
    Route("/snapshots/{snapshot}/items/{row:int}/crop/{view}", media.crop, methods=["GET"]),
    Route("/healthz", pages.healthz, methods=["GET"]),
    Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
]


class ReadOnly:
    """Refuses every method but GET and HEAD (405) before any route runs; optionally refuses
    requests whose Host is not one of ``hosts`` (DNS rebinding, when bound to loopback); adds the
    security headers to every response."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None = None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused: Response | None = None
        if scope["method"] not in READ_METHODS:
            refused = PlainTextResponse("405: this server is read-only (GET and HEAD only)\n", status_code=405,
                                        headers={"Allow": ", ".join(READ_METHODS)})
        elif self.hosts is not None and _host(scope) not in self.hosts:
            refused = PlainTextResponse("400: unexpected Host header\n", status_code=400)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        await (refused or self.app)(scope, receive, send_secured)


def _host(scope: Scope) -> str:
    """The request's Host header without its port ("[::1]:8080" -> "::1")."""
    raw = next((v for k, v in scope.get("headers", []) if k == b"host"), b"").decode("latin-1").lower()
    if raw.startswith("["):
        return raw[1:raw.find("]")] if "]" in raw else raw
    return raw.split(":", 1)[0]


def create_app(cat: Catalog, *, hosts: frozenset[str] | None = None, redact: bool = False) -> ASGIApp:
    """The web UI over ``cat``; ``hosts``: accept only these Host names (None: any); ``redact``: show no
    folder, host name or software version (see :mod:`preprocess.serve.pages`: ``redacted``)."""
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters.update(size=size, short=lambda s: str(s or "")[:12], when=_when, sim=_sim, num=_num,
                                 counted=_counted, spec_summary=_spec_summary, engine=engine_words,
                                 path=lambda p: pages.shown_path(str(p or ""), redact=redact),
                                 filename=lambda p: pages.shown_path(str(p or ""), redact=True))
    templates.env.globals["statuses_help"] = STATUS_HELP
    app = Starlette(routes=ROUTES, exception_handlers={PreprocessError: _error_page, HTTPException: _http_page,
                                                       Exception: _crash_page})
    app.state.catalog = cat
    app.state.templates = templates
    app.state.redact = redact
    return ReadOnly(app, hosts)


STATUS_HELP = {"ok": "stored at the quality the gate chose", "flagged": "stored, but even the top quality "
               "missed the gate", "source": "the source's own bytes (gate.on_fail = source)",
               "passthrough": "the source JPEG was already smaller than any candidate"}


def _status(exc: PreprocessError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConfigError):
        return 400
    return 422 if isinstance(exc, InputError) else 500


async def _error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PreprocessError)
    if not isinstance(exc, ConfigError | InputError) and (gone := _deleted(request)) is not None:
        exc = gone
    return _page(request, _status(exc), exc.code, exc.one_line(), exc.hint)


def _deleted(request: Request) -> NotFoundError | None:
    """When a page of a snapshot failed to read it: REF_MISSING if gc deleted that snapshot after it was cached
    (its rows then read "object not found"), which is forgotten; None for a snapshot that is there."""
    snapshot = request.path_params.get("snapshot")
    if not isinstance(snapshot, str):
        return None
    cat = pages.catalog(request)
    cat.forget(snapshot)
    try:
        cat.pinned(snapshot)
    except NotFoundError as gone:
        return gone
    return None


async def _http_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _page(request, 404, ErrorCode.SERVE_NOT_FOUND, f"no page at {request.url.path[:200]}",
                     "start from the list of branches and tags")
    return PlainTextResponse(f"{exc.status_code}: {exc.detail}\n", status_code=exc.status_code,
                             headers=dict(exc.headers or {}))


async def _crash_page(request: Request, exc: Exception) -> Response:
    if (gone := _deleted(request)) is not None:
        return await _error_page(request, gone)
    log.exception("serve: %s failed", request.url.path)
    internal = InternalError(f"{type(exc).__name__} while showing {request.url.path[:200]}",
                             code=ErrorCode.SERVE_INTERNAL)
    return _page(request, 500, internal.code, internal.one_line(), internal.hint)


def _picture(path: str) -> bool:
    """Whether ``path`` asks for a picture or a file (an <img> or a download shows no page)."""
    parts = path.rstrip("/").split("/")
    return path.startswith("/snapshots/") and len(parts) >= 6 and (
        parts[-1] in media.PICTURES or "/".join(parts[-2:]) in media.PICTURES or parts[-2] in ("compare", "crop"))


def _page(request: Request, status: int, code: str, message: str, hint: str) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    if request.app.state.redact and ("/" in message or status >= 500):  # a path of the server's, or a bug's text
        log.info("serve: %s %s: %s", status, code, message)
        message = "details are in the server's log (this server does not show its folders)"
    if _picture(request.url.path) or request.url.path in ("/items.zip", "/items.csv", "/spec.toml"):
        return PlainTextResponse(f"error[{code}]: {message}\n", status_code=status)  # a picture or a file
    body = templates.get_template("error.html").render(request=request, status=status, code=code, message=message,
                                                       hint=hint, store=pages.store_name(request))
    return HTMLResponse(body, status_code=status)


def _spec_summary(spec: object) -> str:
    if isinstance(spec, SpecBrief):
        return spec.info.summary()
    return SpecInfo.of(spec if isinstance(spec, dict) else None).summary()


def _when(value: object) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if isinstance(value, datetime) else "-"


def _sim(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{float(value):.4f}"


def _counted(value: object, noun: str) -> str:
    """``1 item``, ``1,024 items`` (as :func:`preprocess.core.units.count`, with the thousands marked)."""
    return f"{_num(value)} {noun}" + ("" if value == 1 else "s")


def _num(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{int(value):,}"
