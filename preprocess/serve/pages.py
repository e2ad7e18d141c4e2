"""The HTML pages: refs, a ref's commits, one commit, a version's items and failures, one item (with
the comparer), charts, and the difference of two versions. Each handler reads what its page shows,
through the catalog."""

from __future__ import annotations

import math
import os
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from preprocess.core import names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, InputError, NotFoundError, failure_hint
from preprocess.rows.formats import FORMATS
from preprocess.rows.schema import ITEM_STATUSES
from preprocess.serve import charts
from preprocess.serve.catalog import Catalog, Sibling
from preprocess.serve.comparer import SIDES, Side, Window, parse_side
from preprocess.serve.grid import CARD_FIELDS, PER_PAGE, RANGES, SORTS, GridQuery, Page
from preprocess.store import Ref
from preprocess.store.cells import Record
from preprocess.store.checks import checks_of, worst_crop

# Item fields the item page shows in its own words; any other column (a newer one) is listed as is.
SHOWN_FIELDS = frozenset({"row", "source_path", "source_sha256", "source_format", "source_width", "source_height",
                          "source_bytes", "camera_model", "capture_time", "format", "width", "height", "bytes",
                          "status", "quality", "probes", "similarity", "model", "fingerprint", "job_id", "encoder",
                          "chroma", "similarity_whole", "similarity_crops", "similarity_tiles", "crop_box", "checks"})
LOG_PAGE = 50  # commits per page
FAILURE_PAGE = 100  # failures per page
DIFF_PAGE = 48  # items per kind per page
SIBLINGS_UP_TO = 50_000  # rows: look for the same source elsewhere on the item page up to this many
type Context = dict[str, object]


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


def redacted(request: Request, md: object) -> object:
    """A commit's provenance as the page shows it: with ``--redact``, no machine (host name, CPU), no
    software versions, and paths (inputs, spec, model manifest, watched folder) cut to their last part."""
    if not request.app.state.redact or not isinstance(md, dict) or not md:
        return md
    out = {k: v for k, v in md.items() if k not in ("machine", "software")}
    out["spec_path"] = os.path.basename(str(md.get("spec_path") or ""))
    for section, keys in (("inputs", ("roots",)), ("model", ("manifest",)), ("watch", ("folder",))):
        if isinstance(md.get(section), dict):
            out[section] = {k: ([os.path.basename(str(x)) for x in v] if isinstance(v, list) else
                                os.path.basename(str(v))) if k in keys else v for k, v in md[section].items()}
    return out


def render(request: Request, name: str, status: int = 200, **context: object) -> Response:
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
                  total=len(commits), query=lambda p: urlencode({"ref": ref, "page": p}),
                  at_root=not commits and cat.other_tips(target.snapshot))


def commit_page(request: Request) -> Response:
    cat = catalog(request)
    target = cat.resolve(request.path_params["ref"])
    shown = cat.commit(target)
    return render(request, "commit.html", ref=request.path_params["ref"], target=target, shown=shown,
                  commit=shown.commit, md=shown.commit.metadata)


def version(request: Request, cat: Catalog) -> tuple[str, Ref, bool]:
    """(REF as named, the version a grid page shows, whether REF has moved on since): ``at=SNAPSHOT`` pins the
    version (every link of a grid page carries it: its next page, sorts and downloads show what it shows,
    though a job moves the branch meanwhile), else REF's tip now."""
    ref, at = _ref(request), request.query_params.get("at")
    if not at:
        return ref, cat.resolve(ref), False
    cat.pinned(at)  # a snapshot id (404 else)
    try:
        now = cat.resolve(ref)
    except NotFoundError:  # the branch was deleted meanwhile: the pinned version still shows
        return ref, Ref(ref, "snapshot", at), True
    moved = now.snapshot != at
    return ref, Ref(ref, "snapshot" if moved else now.kind, at), moved  # "branch at" while it is its tip


def _grid(request: Request) -> tuple[Catalog, str, Ref, GridQuery, bool]:
    cat = catalog(request)
    ref, target, moved = version(request, cat)
    return cat, ref, target, GridQuery.parse(request.query_params), moved


def grid_query(ref: str, q: GridQuery, at: str = "", **changes: str | int | float | None) -> str:
    """``ref=REF`` (``&at=SNAPSHOT``: pinned) and the grid's own parameters (with ``changes``): no stray ``&``
    when they are the defaults."""
    own = q.params(**changes)
    return urlencode({"ref": ref, **({"at": at} if at else {})}) + (f"&{own}" if own else "")


def items_page(request: Request) -> Response:
    cat, ref, target, q, moved = _grid(request)
    page = Page.of(cat.select(target.snapshot, q), q)
    at = target.snapshot
    ds = cat.dataset(target.snapshot)
    commits = cat.added_commits(target.snapshot)
    return render(request, "items.html", ref=ref, target=target, q=q, page=page,
                  cards=cat.cards(target.snapshot, page.rows), specs=cat.specs(target), items=len(ds),
                  failures=ds.num_failures, sorts=list(SORTS), statuses=sorted(ITEM_STATUSES), ranges=list(RANGES),
                  per_page=PER_PAGE, commits=commits, formats=sorted(FORMATS), fields=CARD_FIELDS,
                  query=lambda **kw: grid_query(ref, q, at, **kw), filters=grid_query(ref, q, at, page=1, per_page=48),
                  moved=moved, tip=grid_query(ref, q, page=1))


def failures_page(request: Request) -> Response:
    cat = catalog(request)
    ref, target, moved = version(request, cat)
    total = cat.dataset(target.snapshot).num_failures
    pages = math.ceil(total / FAILURE_PAGE)
    page = _page(request, pages)
    rows = cat.failures(target.snapshot, list(range((page - 1) * FAILURE_PAGE, min(total, page * FAILURE_PAGE))))
    for r in rows:
        r["hint"] = failure_hint(str(r["code"]))
        r["commit"] = cat.failure_added_by(target.snapshot, int(r["row"] or 0))
    return render(request, "failures.html", ref=ref, target=target, rows=rows, page=page, pages=pages, total=total,
                  query=lambda p: urlencode({"ref": ref, "at": target.snapshot, "page": p}), moved=moved)


def item_page(request: Request) -> Response:
    cat = catalog(request)
    target = cat.pinned(request.path_params["snapshot"])
    row = int(request.path_params["row"])
    item = cat.item(target.snapshot, row)
    comparison, unavailable = None, ""
    try:
        comparison = cat.comparison(target.snapshot, row, item)
    except (ConfigError, InputError) as exc:  # the source is gone, changed, or not an image any more
        unavailable = _why_unavailable(exc, str(item["source_path"] or ""), redact=request.app.state.redact)
    size = (int(item["width"] or 1), int(item["height"] or 1))
    window = Window.parse(request.query_params, size, comparison.region if comparison else None)
    siblings = _siblings(cat, target.snapshot, row, item)
    sides = _sides(f"/snapshots/{target.snapshot}/items/{row}", item, window, siblings,
                   has_source=comparison is not None)
    others = [k for k in sides if k != "stored"]  # the source, then the same source stored elsewhere
    a = parse_side(request.query_params.get("a", ""), others[0] if others else "stored", set(sides))
    b = parse_side(request.query_params.get("b", ""), "stored", set(sides))
    commit = cat.added_by(target.snapshot, row)
    return render(request, "item.html", target=target, row=row, item=item, commit=commit, md=commit.metadata,
                  checks=checks_of(item, commit.metadata), worst_crop=worst_crop(item),
                  comparison=comparison, unavailable=unavailable, items=len(cat.dataset(target.snapshot)),
                  known_fields=SHOWN_FIELDS, window=window, sides=sides, siblings=siblings,
                  a=sides[a] if a != b else None, b=sides[b],
                  side_choices=SIDES, size=size, cells=window.cells(size),
                  here=lambda **kw: _item_query(request, **kw))


def _why_unavailable(exc: ConfigError | InputError, path: str, *, redact: bool) -> str:
    """Why the source is not shown; with ``redact``, naming it by its file name (or by the code alone when
    the reason names another path)."""
    if not redact:
        return exc.message
    why = exc.message.replace(names.shown(path), shown_path(path, redact=True)) if path else exc.message
    return why if "/" not in why else f"{exc.code} (this server does not show its folders)"


def _item_query(request: Request, **changes: object) -> str:
    params = {k: v for k, v in request.query_params.items() if k in ("a", "b", "x", "y", "side")}
    params.update({k: str(v) for k, v in changes.items()})
    return "?" + urlencode(params) + "#comparer"


def _siblings(cat: Catalog, snapshot: str, row: int, item: Record) -> list[Sibling] | None:
    """The same source elsewhere, or None when the versions are too large to look on every page view."""
    from preprocess.store import refs

    tips = [refs.branch_tip(cat.repo, b) for b in refs.branches(cat.repo)]
    if sum(len(cat.dataset(s)) for s in {snapshot, *tips}) > SIBLINGS_UP_TO:
        return None
    return cat.siblings(snapshot, row, str(item["source_sha256"]))


def _sides(base: str, item: Record, window: Window, siblings: list[Sibling] | None, *,
           has_source: bool) -> dict[str, Side]:
    """Every picture the comparer can show: the source (when it can be read), the stored image, and
    the same source stored elsewhere, each a crop of the same part of the picture (``base``: the
    item's URL)."""
    x, y, w, h = window.x, window.y, window.width, window.height
    box = urlencode({"x": x, "y": y, "w": w, "h": h})
    sim = item["similarity"]
    out: dict[str, Side] = {}
    if has_source:
        out["source"] = Side("source", "source", f"{base}/crop/source?{box}", w, h, None,
                             "decoded and resized to the stored size")
    out["stored"] = Side("stored", "stored", f"{base}/crop/stored?{box}", w, h,
                         float(sim) if isinstance(sim, int | float) else None,
                         f"{item['format']} q{item['quality']}, this row")
    for s in siblings or []:
        c = s.card
        size = (int(item["width"] or 1), int(item["height"] or 1))
        ox, oy, ow, oh = window.scaled(size, s.size)
        url = f"/snapshots/{s.snapshot}/items/{s.row}/crop/stored?" + urlencode({"x": ox, "y": oy, "w": ow, "h": oh})
        out[f"{s.snapshot}:{s.row}"] = Side(f"{s.snapshot}:{s.row}", f"{c.format} q{c.quality} ({s.where})", url,
                                            ow, oh, c.similarity, f"spec {c.fingerprint[:8]}, row {s.row}")
    return out


def charts_page(request: Request) -> Response:
    cat, ref, target, q, moved = _grid(request)
    rows = cat.select(target.snapshot, q)
    hists = [charts.histogram(name, cat.column(target.snapshot, name)[rows]) for name in ("similarity", "quality",
                                                                                          "bytes")]
    sizes = cat.column(target.snapshot, "bytes")
    points, held = [], 0
    for added in cat.origins(target.snapshot).commits():
        if not added.items and not added.failures:
            continue
        c = cat.commit_at(added.snapshot)
        got = int(sizes[added.items.start:added.items.stop].sum()) if added.items else 0
        held += got
        points.append(charts.CommitPoint(added.snapshot, f"{c.written_at:%Y-%m-%d %H:%M} · {c.message[:60]}",
                                         len(added.items), got, held))
    over = charts.commit_charts(points, lambda s: "/charts?" + urlencode({"ref": ref, "at": target.snapshot,
                                                                            "commit": s}))
    return render(request, "charts.html", ref=ref, target=target, q=q, hists=hists, over=over, total=int(rows.size),
                  commit=cat.commit_at(q.commit) if len(q.commit) == 20 else None,
                  items_link="/items?" + grid_query(ref, q, target.snapshot, page=1), moved=moved)


def diff_page(request: Request) -> Response:
    cat = catalog(request)
    a_name, b_name = request.query_params.get("a", ""), request.query_params.get("b", "")
    if not a_name or not b_name:
        return render(request, "diff.html", names=cat.names(), a_name=a_name, b_name=b_name, d=None)
    a, b = cat.resolve(a_name), cat.resolve(b_name)
    view = cat.diff(a, b)
    added, removed, pairs = view.added(), view.removed(), view.pairs()
    longest = max(len(added), len(removed), len(view.d.changed), len(pairs))
    pages = math.ceil(longest / DIFF_PAGE)
    page = _page(request, pages)
    window = slice((page - 1) * DIFF_PAGE, page * DIFF_PAGE)
    changed = [(view.rows_a[c.item.key], view.rows_b[c.item.key], c) for c in view.d.changed[window]]
    return render(request, "diff.html", names=cat.names(), a_name=a_name, b_name=b_name, a=a, b=b, d=view.d,
                  added=added[window], removed=removed[window], changed=changed, pairs=pairs[window],
                  kept=[p.kept for p in view.d.pairs[window]],
                  counts={"added": len(added), "removed": len(removed), "pairs": len(pairs),
                          "kept": sum(p.kept for p in view.d.pairs)},
                  page=page, pages=pages, query=lambda p: urlencode({"a": a_name, "b": b_name, "page": p}))


def not_found(what: str) -> NotFoundError:
    return NotFoundError(f"no {what}", code=ErrorCode.SERVE_NOT_FOUND, hint="start from the list of branches and tags")
