"""Image responses: thumbnails, the stored image (as stored where browsers show its format), and
the side-by-side comparison's pictures. All are pinned to a snapshot id, so they never change:
ETag + ``Cache-Control: immutable``, and 304 when the browser already has them."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import NotFoundError, PreprocessError
from preprocess.serve import renditions
from preprocess.serve.pages import catalog
from preprocess.store.refs import SNAPSHOT_ID

IMMUTABLE = "private, max-age=31536000, immutable"
VIEWS = ("source", "zoom-source", "zoom-stored", "zoom-diff")


def _pinned(request: Request, kind: str, make: Callable[[str, int], tuple[bytes, str]]) -> Response:
    snapshot, row = str(request.path_params["snapshot"]), int(request.path_params["row"])
    if not SNAPSHOT_ID.match(snapshot):
        catalog(request).pinned(snapshot)  # raises REF_MISSING with the CLI's wording
    etag = f'"{snapshot}-{row}-{kind}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    catalog(request).pinned(snapshot)
    try:
        body, media = make(snapshot, row)
    except PreprocessError:
        raise
    except Exception:  # gc deleted the snapshot after it was cached? Then 404 (REF_MISSING), not a 500
        catalog(request).forget(snapshot)
        catalog(request).pinned(snapshot)
        raise
    return Response(body, media_type=media, headers=headers)


def thumbnail(request: Request) -> Response:
    cat = catalog(request)
    return _pinned(request, "thumb", lambda s, r: (cat.thumbnail(s, r), "image/jpeg"))


def stored(request: Request) -> Response:
    cat = catalog(request)
    return _pinned(request, "stored", lambda s, r: renditions.for_browser(cat.stored(s, r)))


def comparison(request: Request) -> Response:
    cat = catalog(request)
    view = str(request.path_params["view"])
    if view not in VIEWS:
        raise NotFoundError(f"no picture {view[:40]!r} in a comparison", code=ErrorCode.SERVE_NOT_FOUND,
                          hint=f"one of {', '.join(VIEWS)}")
    return _pinned(request, view, lambda s, r: (cat.comparison(s, r).images[view], "image/png"))
