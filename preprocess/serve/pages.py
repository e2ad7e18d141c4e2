"""The HTML pages: refs, a ref's commits, one commit, a version's items and failures, one item,
and the difference of two versions. Each handler reads what its page shows, through the catalog."""

from __future__ import annotations

import math
import os
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import FAILURE_HINTS, ConfigError, InputError
from preprocess.rows.schema import ITEM_STATUSES
from preprocess.serve.catalog import Catalog
from preprocess.serve.grid import CARD_FIELDS, PER_PAGE, RANGES, SORTS, GridQuery, Page
from preprocess.store import Ref

# Item fields the item page shows in its own words; any other column (a newer one) is listed as is.
SHOWN_FIELDS = frozenset({"row", "source_path", "source_sha256", "source_format", "source_width", "source_height",
                          "source_bytes", "camera_model", "capture_time", "format", "width", "height", "bytes",
                          "status", "quality", "probes", "similarity", "model", "fingerprint", "job_id"})
LOG_PAGE = 50  # commits per page
FAILURE_PAGE = 100  # failures per page
DIFF_PAGE = 48  # items per kind per page


def catalog(request: Request) -> Catalog:
    cat: Catalog = request.app.state.catalog
    return cat


def shown_path(stored: str, *, redact: bool) -> str:
    """A recorded path as the page shows it: escaped (:func:`preprocess.core.names.shown`); only its file
    name when ``redact``."""
    return names.quote(os.path.basename(names.real(stored))) if redact else names.shown(stored)


def store_name(request: Request) -> str:
    """The store's location, or (``--redact``) only its last part."""
    location: str = catalog(request).location
    return os.path.basename(location.rstrip("/")) if request.app.state.redact else location


def redacted(request: Request, md: dict[str, Any]) -> dict[str, Any]:
    """A commit's provenance as the page shows it: with ``--redact``, no machine (host name, CPU), no
    software versions, and paths (inputs, spec, model manifest, watched folder) cut to their last part."""
    if not request.app.state.redact or not md:
        return md
    out = {k: v for k, v in md.items() if k not in ("machine", "software")}
    out["spec_path"] = os.path.basename(str(md.get("spec_path") or ""))
    for section, keys in (("inputs", ("roots",)), ("model", ("manifest",)), ("watch", ("folder",))):
        if isinstance(md.get(section), dict):
            out[section] = {k: ([os.path.basename(str(x)) for x in v] if isinstance(v, list) else
                                os.path.basename(str(v))) if k in keys else v for k, v in md[section].items()}
    return out


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    context.setdefault("store", store_name(request))
    if "md" in context:
        context["md"] = redacted(request, context["md"])
    response: Response = request.app.state.templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Cache-Control"] = "no-cache"  # branches move: always ask again
    return response


def _page(request: Request, pages: int) -> int:
    text = request.query_params.get("page") or "1"
    # ASCII digits, a few: "²".isdigit() and 5,000 digits (over int()'s limit) were 500s
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not 1 <= int(text) <= max(1, pages):
        raise ConfigError(f"bad page={text[:20]!r}: expected 1 to {max(1, pages)}", code=ErrorCode.SERVE_PARAM,
                          hint="fix the URL, or start again from the first page")
    return int(text)


def _ref(request: Request, name: str = "ref", default: str | None = "main") -> str:
    value = request.query_params.get(name, default)
    if value is None:
        raise ConfigError(f"missing {name}=REF",
                          code=ErrorCode.SERVE_PARAM, hint="name a branch, a tag or a snapshot id")
    return value


def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


def refs_page(request: Request) -> Response:
    cat = catalog(request)
    return render(request, "refs.html", tips=cat.tips(), names=cat.names())


def log_page(request: Request) -> Response:
    cat = catalog(request)
    ref = _ref(request)
    target = cat.resolve(ref)
    commits = cat.log(target)
    pages = math.ceil(len(commits) / LOG_PAGE)
    page = _page(request, pages)
    shown = commits[(page - 1) * LOG_PAGE:page * LOG_PAGE]
    return render(request, "log.html", ref=ref, target=target, commits=shown, page=page, pages=pages,
                  total=len(commits), query=lambda p: urlencode({"ref": ref, "page": p}))


def commit_page(request: Request) -> Response:
    cat = catalog(request)
    target = cat.resolve(request.path_params["ref"])
    commit = cat.commit(target)
    return render(request, "commit.html", ref=request.path_params["ref"], target=target, commit=commit,
                  md=commit.get("metadata") or {})


def items_page(request: Request) -> Response:
    cat = catalog(request)
    ref = _ref(request)
    target = cat.resolve(ref)
    q = GridQuery.parse(request.query_params)
    page = Page.of(cat.select(target.snapshot, q), q)
    cards = cat.rows(target.snapshot, page.rows, list(CARD_FIELDS))
    ds = cat.dataset(target.snapshot)
    return render(request, "items.html", ref=ref, target=target, q=q, page=page, cards=cards,
                  specs=cat.specs(target), items=len(ds), failures=ds.num_failures, sorts=list(SORTS),
                  statuses=sorted(ITEM_STATUSES), ranges=list(RANGES), per_page=PER_PAGE,
                  query=lambda **kw: urlencode({"ref": ref}) + "&" + q.params(**kw))


def failures_page(request: Request) -> Response:
    cat = catalog(request)
    ref = _ref(request)
    target = cat.resolve(ref)
    total = cat.dataset(target.snapshot).num_failures
    pages = math.ceil(total / FAILURE_PAGE)
    page = _page(request, pages)
    rows = cat.failures(target.snapshot, list(range((page - 1) * FAILURE_PAGE, min(total, page * FAILURE_PAGE))))
    for r in rows:
        r["hint"] = FAILURE_HINTS.get(r["code"], "")
        r["commit"] = cat.commit_of_job(target.snapshot, r["job_id"])
    return render(request, "failures.html", ref=ref, target=target, rows=rows, page=page, pages=pages, total=total,
                  query=lambda p: urlencode({"ref": ref, "page": p}))


def item_page(request: Request) -> Response:
    cat = catalog(request)
    target = cat.pinned(request.path_params["snapshot"])
    row = int(request.path_params["row"])
    item = cat.item(target.snapshot, row)
    commit_id = cat.commit_of_job(target.snapshot, str(item["job_id"]))
    commit = cat.commit(Ref(commit_id, "snapshot", commit_id)) if commit_id else None
    comparison, unavailable = None, ""
    try:
        comparison = cat.comparison(target.snapshot, row, item)
    except (ConfigError, InputError) as exc:  # the source is gone, changed, or not an image any more
        unavailable = f"{exc.code} (this server does not show its folders)" if request.app.state.redact else exc.message
    return render(request, "item.html", target=target, row=row, item=item, commit=commit,
                  md=(commit or {}).get("metadata") or {}, comparison=comparison, unavailable=unavailable,
                  items=len(cat.dataset(target.snapshot)), known_fields=SHOWN_FIELDS)


def diff_page(request: Request) -> Response:
    cat = catalog(request)
    a_name, b_name = request.query_params.get("a", ""), request.query_params.get("b", "")
    if not a_name or not b_name:
        return render(request, "diff.html", names=cat.names(), a_name=a_name, b_name=b_name, d=None)
    a, b = cat.resolve(a_name), cat.resolve(b_name)
    d = cat.diff(a, b)
    longest = max(len(d["added"]), len(d["removed"]), len(d["changed"]))
    pages = math.ceil(longest / DIFF_PAGE)
    page = _page(request, pages)
    window = slice((page - 1) * DIFF_PAGE, page * DIFF_PAGE)
    return render(request, "diff.html", names=cat.names(), a_name=a_name, b_name=b_name, a=a, b=b, d=d,
                  added=d["added"][window], removed=d["removed"][window], changed=d["changed"][window],
                  page=page, pages=pages,
                  query=lambda p: urlencode({"a": a_name, "b": b_name, "page": p}))
