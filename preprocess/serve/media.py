"""Image responses and downloads: thumbnails, the stored image (as stored where browsers show its
format), the side-by-side comparison's pictures and the comparer's crops, all pinned to a snapshot
id, so they never change (ETag + ``Cache-Control: immutable``, 304 when the browser has them) but for
those made from the source, which may be deleted or rewritten since: the browser asks again each time,
and gets 304 only while the source is the same (:meth:`~preprocess.serve.catalog.Catalog.comparison`); and
the downloads: one image, the filtered items as a zip or a CSV manifest, a commit's spec as TOML."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from PIL import Image
from starlette.requests import Request
from starlette.responses import Response

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import NotFoundError
from preprocess.pipeline.images import decode_rgb
from preprocess.serve import comparer, downloads, renditions
from preprocess.serve.grid import GridQuery
from preprocess.serve.pages import _ref, catalog, version
from preprocess.store.refs import SNAPSHOT_ID

IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"  # a picture made from the source: asked again, 304 while the source is the same
VIEWS = ("source", "zoom-source", "zoom-stored", "zoom-diff")
CROPS = ("source", "stored")
PICTURES = ("thumb", "stored", "download", *(f"compare/{v}" for v in VIEWS), *(f"crop/{v}" for v in CROPS))


def _pinned(request: Request, kind: str, make: Callable[[str, int], tuple[bytes, str]],
            headers: dict[str, str] | None = None, *, from_source: bool = False) -> Response:
    """``make(snapshot, row)``'s picture; ``from_source``: made from the row's source, which is checked
    (SOURCE_UNAVAILABLE when it is gone or changed) before a 304 as before any picture."""
    snapshot, row = str(request.path_params["snapshot"]), int(request.path_params["row"])
    if not SNAPSHOT_ID.match(snapshot):
        catalog(request).pinned(snapshot)  # raises REF_MISSING with the CLI's wording
    etag = f'"{snapshot}-{row}-{kind}"'
    headers = {"ETag": etag, "Cache-Control": REVALIDATE if from_source else IMMUTABLE, **(headers or {})}
    if etag in request.headers.get("if-none-match", ""):
        if from_source:
            catalog(request).pinned(snapshot)
            catalog(request).comparison(snapshot, row)
        return Response(status_code=304, headers=headers)
    catalog(request).pinned(snapshot)
    body, media = make(snapshot, row)  # a snapshot gc deleted after it was cached: 404 (the app's error pages)
    return Response(body, media_type=media, headers=headers)


def thumbnail(request: Request) -> Response:
    cat = catalog(request)
    return _pinned(request, "thumb", lambda s, r: (cat.thumbnail(s, r), "image/jpeg"))


def stored(request: Request) -> Response:
    cat = catalog(request)
    return _pinned(request, "stored", lambda s, r: renditions.for_browser(cat.stored(s, r, shown=True)))


def comparison(request: Request) -> Response:
    cat = catalog(request)
    view = str(request.path_params["view"])
    if view not in VIEWS:
        raise NotFoundError(f"no picture {view[:40]!r} in a comparison", code=ErrorCode.SERVE_NOT_FOUND,
                            hint=f"one of {', '.join(VIEWS)}")
    return _pinned(request, view, lambda s, r: (cat.comparison(s, r).images[view], "image/png"), from_source=True)


def crop(request: Request) -> Response:
    """A square of the source (resized to the stored size) or of the stored image, as PNG, at 1:1."""
    cat = catalog(request)
    view = str(request.path_params["view"])
    if view not in CROPS:
        raise NotFoundError(f"no picture {view[:40]!r} to crop", code=ErrorCode.SERVE_NOT_FOUND,
                            hint=f"one of {', '.join(CROPS)}")

    def make(s: str, r: int) -> tuple[bytes, str]:
        item = cat.item(s, r)
        size = (int(item["width"] or 1), int(item["height"] or 1))
        box = comparer.crop_box(request.query_params, size)
        img: Image.Image = (cat.comparison(s, r, item).source if view == "source"
                            else decode_rgb(cat.stored(s, r, shown=True)))
        return renditions.png(comparer.crop(img, box)), "image/png"

    box = urlencode({k: request.query_params.get(k, "") for k in ("x", "y", "w", "h")})
    return _pinned(request, f"crop-{view}-{box}", make, from_source=view == "source")


def download(request: Request) -> Response:
    """One stored image, as stored, as a file."""
    cat = catalog(request)
    name: list[str] = []

    def make(s: str, r: int) -> tuple[bytes, str]:
        data, filename = downloads.item_file(cat, s, r)
        name.append(filename)
        return data, "application/octet-stream"

    response = _pinned(request, "download", make)
    if name:
        response.headers["Content-Disposition"] = downloads.attachment(name[0])
    return response


def items_zip(request: Request) -> Response:
    """The items the grid's filters select: their images and manifest.csv, as a zip."""
    cat = catalog(request)
    _, target, _ = version(request, cat)
    rows = cat.select(target.snapshot, GridQuery.parse(request.query_params))
    body = downloads.selection_zip(cat, target.snapshot, rows, redact=request.app.state.redact)
    return Response(body, media_type="application/zip", headers={
        "Content-Disposition": downloads.attachment(f"items-{target.snapshot[:12]}.zip"), "Cache-Control": "no-cache"})


def items_csv(request: Request) -> Response:
    """The manifest of the items the grid's filters select, as CSV."""
    cat = catalog(request)
    _, target, _ = version(request, cat)
    rows = cat.select(target.snapshot, GridQuery.parse(request.query_params))
    body = downloads.selection_csv(cat, target.snapshot, rows, redact=request.app.state.redact)
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": downloads.attachment(f"items-{target.snapshot[:12]}.csv"),
                             "Cache-Control": "no-cache"})


def spec(request: Request) -> Response:
    """The spec of the commit REF names, as TOML."""
    cat = catalog(request)
    target = cat.resolve(_ref(request))
    text = downloads.spec_toml(cat.commit_at(target.snapshot), redact=request.app.state.redact)
    return Response(text, media_type="application/toml; charset=utf-8", headers={
        "Content-Disposition": downloads.attachment(f"spec-{target.snapshot[:12]}.toml"), "Cache-Control": "no-cache"})
