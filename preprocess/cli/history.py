"""`preprocess log|show|diff|tag|branch|reset|export|gc`: the dataset's versions and provenance.

Every REF is a branch, a tag or a snapshot id (a unique prefix of 4+ characters is enough), and
``REF~N`` its Nth first-parent ancestor. Read commands print rich tables that fit 80 columns, or
JSON with ``--json`` (the same bytes for the same content).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from preprocess.cli.app import app, emit, err, fail, fmt, out, quiet_libraries
from preprocess.core import interrupts, names
from preprocess.core.codes import ErrorCode
from preprocess.core.errors import PreprocessError
from preprocess.core.jsonable import Json
from preprocess.core.units import count, size

if TYPE_CHECKING:
    import icechunk as ic

    from preprocess.rows.provenance import Provenance
    from preprocess.store.history import Commit, Log, ShownCommit
    from preprocess.store.lineage import Lineage
    from preprocess.store.refs import RefInfo

SHORT_ID = 12  # characters of a snapshot id in tables (a unique prefix of 4+ is a REF)
WIDE = 110  # a terminal at least this wide gets the wide tables
NARROW = 72  # `log` on a terminal narrower than this prints --oneline's lines

Store = Annotated[str, typer.Argument(help="The dataset: a local path or s3://BUCKET/PREFIX.", show_default=False)]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
Wait = Annotated[float, typer.Option(min=0.0, help="Seconds to wait while a job writes the same local store.")]
RefWait = Annotated[float, typer.Option("--wait", min=0.0, help="Seconds to wait for a commit in progress on the same "
                                                       "local store.")]


def _repo(store: str) -> ic.Repository:
    from preprocess.store import open_repo

    quiet_libraries()
    return open_repo(store, create=False)


def _guard[T](call: Callable[[], T], as_json: str = "") -> T:
    """``call()``; a PreprocessError ends the command (as JSON when ``as_json`` names the command)."""
    try:
        return call()
    except PreprocessError as exc:
        fail(exc, as_json=as_json)
        raise  # unreachable: fail() exits


def _kv(title: str, rows: list[tuple[str, str]]) -> Table:
    t = Table(title=escape(names.line(title)), show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for k, v in rows:  # plain text, never markup, and one printable line: values hold names and messages
        t.add_row(k, Text(names.line(v)))
    return t


def _when(iso: str) -> str:
    return iso[:19].replace("T", " ") + " UTC"


@app.command("log")
def log_cmd(store: Store,
            ref: Annotated[str | None, typer.Argument(help="Whose history: a branch, tag, snapshot or REF~N "
                                                           "(default: main).", show_default=False)] = None,
            branch: Annotated[str | None, typer.Option("--branch", "-b", "--ref",
                                                       help="The same as REF (kept for scripts).")] = None,
            limit: Annotated[int | None, typer.Option(help="Show at most this many commits (1 or more).")] = None,
            oneline: Annotated[bool, typer.Option("--oneline", help="One line per commit: id, refs, "
                                                                    "message (as git log --oneline; also on a "
                                                                    "terminal under 72 columns).")] = False,
            as_json: AsJson = False) -> None:
    """The commits of a branch (or any REF; HEAD is main's tip), newest first: id, time, +items, failures,
    spec, message."""
    from preprocess.core.errors import ConfigError
    from preprocess.store import history

    js = "log" if as_json else ""
    if ref is not None and branch is not None and ref != branch:
        fail(ConfigError(f"two refs given: {ref!r} and --branch {branch!r}", code=ErrorCode.CLI_USAGE,
                         hint="give REF or --branch, not both"), as_json=js)
    branch = ref or branch or "main"
    found = _guard(lambda: history.history_of(_repo(store), branch, limit=limit), js)
    if as_json:
        emit("log", [c.to_dict() for c in found.commits], key="commits")
        return
    if found.commits and (oneline or out.width < NARROW):  # a table there would split the ids
        for c in found.commits:
            refs = f" ({', '.join(c.refs)})" if c.refs else ""
            out.print(f"{c.id[:SHORT_ID]}{refs} {names.line(c.message)}", highlight=False, markup=False,
                      soft_wrap=True)
    elif found.commits:
        out.print(_log_table(f"{names.quote(store)} ({branch})", found.commits))
    else:
        err.print(_no_commits(store, branch, found), highlight=False, soft_wrap=True)


def _no_commits(store: str, ref: str, found: Log) -> str:
    """Why a log is empty: the ref names the repository's first snapshot (other commits may follow
    it), or the dataset has no commit at all."""
    if found.at_root and found.ref.kind == "snapshot":
        return (f"{ref} is the repository's first snapshot ({found.ref.snapshot}, {ROOT_WORDS}): no commit "
                f"comes before it; `preprocess log {names.quote(store)}` lists the commits of main")
    return "no commits yet: run a job into this dataset (`preprocess run PHOTOS --store ...`)"


ROOT_WORDS = "made when the dataset was created, before any job"


def _log_table(title: str, commits: list[Commit]) -> Table:
    """The log as a table that fits the terminal: on a wide one a row per commit with the model; on
    80 columns the refs under the id, the date over the time and the spec name over its fingerprint,
    so that the message keeps a third of the width."""
    wide = out.width >= WIDE  # on narrow terminals the model is in `show` and --json only
    t = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD)
    t.add_column("snapshot", overflow="fold", max_width=SHORT_ID)
    t.add_column("time (UTC)", no_wrap=True)
    t.add_column("+items", justify="right", no_wrap=True)
    t.add_column("failed", justify="right", no_wrap=True)
    t.add_column("spec", overflow="fold" if wide else "ellipsis", max_width=None if wide else SHORT_ID)
    if wide:
        t.add_column("model", overflow="fold")
    t.add_column("message", overflow="fold", ratio=1)
    sep = " " if wide else "\n"
    for c in commits:
        refs = f"[cyan]{escape(', '.join(c.refs))}[/]" if c.refs else ""
        spec = f"{escape(names.quote(c.spec))}{sep}{c.fingerprint[:8]}".strip() if c.fingerprint else "-"
        when = c.written_at.strftime(f"%Y-%m-%d{sep}%H:%M")
        snapshot, message = f"[bold]{c.id[:SHORT_ID]}[/]", escape(names.line(c.message))
        if wide and refs:
            message = f"({refs}) {message}"
        elif refs:
            snapshot += f"\n{refs}"
        cells = [snapshot, when, _num(c.added), _num(c.failed), spec]
        t.add_row(*cells, *([escape(names.quote(c.model or "-"))] if wide else []), message)
    return t


def _num(n: int | None) -> str:
    return "-" if n is None else str(n)


def _camera(s: Mapping[str, object]) -> str:
    """The source's camera and capture time from its EXIF, as one line; "no EXIF camera or time" for none."""
    camera, when = s.get("camera_model") or "", s.get("capture_time") or ""  # older rows: raw EXIF
    if not camera and not when:
        return "no EXIF camera or time"
    return names.line(f"{camera or 'unknown camera'}" + (f" at {when}" if when else ""))


@app.command("show")
def show_cmd(store: Store,
             ref: Annotated[str, typer.Argument(help="The commit (REF); with --item, the version to "
                                                     "look in.")] = "main",
             item: Annotated[str | None, typer.Option(help="A source path or file name, a source or stored "
                                                           "(exported) file, or 8+ hex of a sha256 (the source's "
                                                           "or the stored bytes'): that image's lineage.")] = None,
             as_json: AsJson = False) -> None:
    """One commit's full provenance, or (--item) one image's lineage: source, spec, model, quality,
    similarity and the commit that stored it."""
    from preprocess.store import history, lineage

    js = "show" if as_json else ""
    if item is not None:
        found = _guard(lambda: lineage.lineage(_repo(store), item, ref), js)
        if as_json:
            emit("show", found.to_dict())
        else:
            _print_lineage(found)
        return
    shown = _guard(lambda: history.show(_repo(store), ref), js)
    if as_json:
        emit("show", shown.to_dict())
    else:
        _print_commit(shown)


def _print_commit(shown: ShownCommit) -> None:
    c, p, v = shown.commit, shown.commit.provenance, shown.version
    rows = [("snapshot", shown.ref.snapshot), ("parent", c.parent or "-"), ("refs", ", ".join(c.refs) or "-"),
            ("written", _when(c.written_at.isoformat())), ("message", c.message), ("kind", c.kind)]
    if p is not None:
        rows += _provenance_rows(p)
    rows.append(("version holds", f"{count(v.items, 'item')}, {count(v.failures, 'failure')}"))
    if not shown.reachable:  # "refs -" and "branch tmpb" read as if tmpb still held it
        rows.insert(3, ("reached by", "no branch or tag now (a reset or a deleted branch left it; "
                                      "`preprocess gc` deletes it once older than --older-than)"))
    out.print(_kv(f"commit {shown.ref.snapshot}", rows))


def _provenance_rows(p: Provenance) -> list[tuple[str, str]]:
    from preprocess.store.history import engine_words

    i, m, c = p.inputs, p.model, p.counts
    engine = engine_words(p.engine.model_dump(mode="json"))
    return [
        ("job", p.job_id),
        ("branch", f"{i.branch or '-'} (parent {i.parent_snapshot or '-'})"),
        ("inputs", f"{i.count} files under {', '.join(map(names.shown, i.roots))}"),
        ("input list sha256", i.list_sha256 or "-"),
        ("spec", f"{names.shown(p.spec_path) or '-'} ({names.quote(p.spec_info.pipeline.name or '-')})"),
        ("spec sha256", p.spec_sha256 or "-"),
        ("fingerprint", p.fingerprint or "-"),
        ("settings", p.spec_info.summary() if p.spec else "-"),
        ("model", f"{names.quote(m.name or '-')} ({m.dim if m.dim is not None else '-'}-d)"),
        ("weights sha256", m.weights_sha256 or "-"),
        ("onnx sha256", m.onnx_sha256 or "-"),
        ("engine", engine or "-"),
        ("software", ", ".join(f"{k} {v}" for k, v in sorted(p.software.items()) if v)),
        ("machine", p.machine.host or "-"),
        ("counts", f"sources {c.sources}, stored {c.stored}, skipped {c.skipped}, failed {c.failed}, "
                   f"flagged {c.flagged}, kept_source {c.kept_source}, passthrough {c.passthrough}"),
        ("bytes", f"in {size(p.bytes_.in_)}, out {size(p.bytes_.out)}"),
        ("time", f"{_when(p.started_at) if p.started_at else '-'} .. {_when(p.finished_at) if p.finished_at else '-'}"),
    ]


def _items(rows: list[int]) -> str:
    """"item 1 was", "items 1, 4 were"."""
    return f"item {rows[0]} was" if len(rows) == 1 else f"items {', '.join(map(str, rows))} were"


def _print_lineage(found: Lineage) -> None:
    ref = found.ref
    if found.same_as:
        err.print(Text(f"note: {names.quote(found.query)} had the same content as {names.shown(found.same_as)} in "
                       "the job that recorded it: recorded under that name"), highlight=False, soft_wrap=True)
    if found.changed and found.file_sha256:
        now = next((i.index for i in found.items if i.row["source_sha256"] == found.file_sha256), None)
        err.print(Text(f"note: {names.quote(found.query)} has changed since {_items(found.changed)} stored from it: "
                       f"its content now (sha256 {found.file_sha256[:16]}...) is "
                       + (f"item {now}'s" if now is not None else f"in no row of {found.ref.name}: run the job "
                          "again to store it")), highlight=False, soft_wrap=True)
    for item in found.items:
        s, st, c, p = item.row, item.row, item.made_by.commit, item.made_by.provenance
        sim = st["similarity"]
        rows = [
            ("source", names.shown(str(s["source_path"]))), ("source sha256", str(s["source_sha256"])),
            ("source image", f"{s['source_format']} {s['source_width']}x{s['source_height']}, "
                             f"{size(int(s['source_bytes'] or 0))}"),
            ("camera", _camera(s)),
            ("stored", f"{st['format']} {st['width']}x{st['height']}, {size(int(st['bytes'] or 0))}, "
                       f"status {st['status']}"),
            ("quality", f"{st['quality']} (after {st['probes']} probes)"),
            ("similarity", fmt(float(sim) if isinstance(sim, int | float) else None, ".4f")),
            *([("checks", checks)] if (checks := _checks_line(s, c)) else []),
            ("spec", f"{names.shown(p.spec_path if p else '') or '-'} "
                     f"({names.quote((p.spec_info.pipeline.name if p else '') or '-')}), "
                     f"fingerprint {s['fingerprint']}"),
            ("model", f"{names.quote(str(s['model']))} "
                      f"(weights {((p.model.weights_sha256 if p else '') or '-')[:16]})"),
            ("commit", f"{c.id} {names.line(c.message)}" if c else "-"),
            ("committed", f"{_when(c.written_at.isoformat()) if c else '-'} on {(c.branch if c else '') or '-'}, "
                          f"job {s['job_id']}"),
        ]
        out.print(_kv(f"item {item.index} of {ref.name} ({ref.snapshot})", rows))
    for f in found.failures:
        c = f.made_by.commit
        out.print(_kv(f"failure {f.index} of {ref.name}", [
            ("source", names.shown(str(f.row["source_path"]))), ("source sha256", str(f.row["source_sha256"] or "-")),
            ("failure", f"[{f.row['code']}] {names.line(str(f.row['message']))}"),
            ("commit", f"{c.id} {c.message}" if c else "-")]))


def _checks_line(row: Mapping[str, object], commit: Commit | None) -> str:
    """Every check the gate measured of the stored image, as the web UI's item page lists them: ``whole
    0.9980 >= 0.99, crops 0.9831 >= 0.975 (worst crop 256x240 at x 0, y 240)``; "" for a row without checks."""
    from preprocess.store.checks import checks_of, worst_crop

    found = checks_of(dict(row), commit.metadata if commit else {})  # type: ignore[arg-type]
    several = len({c.model for c in found}) > 1
    words = [f"{c.model + ' ' if several else ''}{c.view} {c.similarity:.4f}"
             + (f" >= {c.threshold:g}" if c.threshold is not None else "")
             + ("" if c.passed is not False else " (failed)") for c in found]
    box = worst_crop(dict(row))  # type: ignore[arg-type]
    crop = f" (worst crop {box[2] - box[0]}x{box[3] - box[1]} at x {box[0]}, y {box[1]})" if box and words else ""
    return ", ".join(words) + crop


@app.command("diff")
def diff_cmd(store: Store, ref_a: Annotated[str, typer.Argument(help="From this version (REF).")],
             ref_b: Annotated[str, typer.Argument(help="To this version (REF).")],
             limit: Annotated[int, typer.Option(help="List at most this many items per kind (tables).")] = 20,
             as_json: AsJson = False) -> None:
    """Item-level difference between two versions (any two refs, diverged branches included):
    added, removed, changed items (which fields), bytes delta, spec and model changes."""
    from preprocess.cli import diffview
    from preprocess.store import diff

    d = _guard(lambda: diff.diff(_repo(store), ref_a, ref_b), "diff" if as_json else "")
    if as_json:
        emit("diff", d.to_dict())
        return
    out.print(_kv(f"diff {ref_a} -> {ref_b}", diffview.summary_rows(d, ref_a, ref_b)))
    if d.pairs:
        out.print(diffview.pairs_table(d, limit))
    if (table := diffview.items_table(d, limit, wide=out.width >= WIDE)) is not None:
        out.print(table)


@app.command("tag")
def tag_cmd(store: Store,
            name: Annotated[str | None, typer.Argument(help="The new tag (tags never move); without it, "
                                                            "list the tags.", show_default=False)] = None,
            ref: Annotated[str | None, typer.Argument(help="What to tag (REF; default: main).",
                                                      show_default=False)] = None,
            delete: Annotated[str | None, typer.Option("--delete", "-d", help="Delete this tag (its name "
                                                       "cannot be used again).")] = None,
            wait: RefWait = 10.0, as_json: AsJson = False) -> None:
    """List the tags (`tag STORE`), name a version for good (`tag STORE NAME [REF]`, e.g. the one a
    model was trained on), or delete a tag (`tag STORE --delete NAME`)."""
    _ref_command(store, "tag", name, ref, delete, wait=wait, js="tag" if as_json else "")


@app.command("branch")
def branch_cmd(store: Store,
               name: Annotated[str | None, typer.Argument(help="The new branch; without it, list the branches.",
                                                          show_default=False)] = None,
               ref: Annotated[str | None, typer.Argument(help="Where it starts (REF; default: main).",
                                                         show_default=False)] = None,
               delete: Annotated[str | None, typer.Option("--delete", "-d", help="Delete this branch (not "
                                                          "main, nor one a running job writes).")] = None,
               wait: RefWait = 10.0, as_json: AsJson = False) -> None:
    """List the branches (`branch STORE`), start one for an experiment (`branch STORE NAME [REF]`;
    `preprocess run ... --branch NAME` then commits to it), or delete one (`branch STORE --delete NAME`)."""
    _ref_command(store, "branch", name, ref, delete, wait=wait, js="branch" if as_json else "")


def _ref_command(store: str, kind: Literal["branch", "tag"], name: str | None, ref: str | None,
                 delete: str | None, *, wait: float, js: str) -> None:
    """The three forms of `branch` and `tag`: list, create, --delete (``js``: the command, under --json)."""
    from preprocess.core.errors import ConfigError
    from preprocess.store import refs

    if delete is not None and name is not None:
        fail(ConfigError(f"`{kind} STORE --delete NAME` takes no other name", code=ErrorCode.CLI_USAGE,
                         hint=f"delete with `preprocess {kind} STORE --delete NAME`, create with "
                              f"`preprocess {kind} STORE NAME [REF]`"), as_json=js)
    if delete is not None:
        drop = refs.delete_branch if kind == "branch" else refs.delete_tag
        gone = _guard(lambda: drop(_repo(store), delete, wait=wait), js)
        _done(js, gone.to_dict(), f"deleted {kind} {delete} (was {gone.snapshot}: readable by id; gc deletes it "
                                  "unless another branch or tag reaches it)")
    elif name is not None:
        make = refs.create_branch if kind == "branch" else refs.create_tag
        made = _guard(lambda: make(_repo(store), name, ref or "main", wait=wait), js)
        _done(js, made.to_dict(), f"{kind} {name} -> {made.snapshot}")
    else:
        _print_refs(store, kind, _guard(lambda: refs.list_refs(_repo(store), kind), js), js=js)


def _print_refs(store: str, kind: str, found: list[RefInfo], *, js: str) -> None:
    if js:
        emit(js, [r.to_dict() for r in found], key="branches" if kind == "branch" else "tags")
        return
    where = escape(names.quote(store))
    t = Table(title=f"{kind}es of {where}" if kind == "branch" else f"tags of {where}", title_justify="left",
              box=box.SIMPLE_HEAD)
    t.add_column(kind, overflow="fold", style="bold", ratio=1)
    t.add_column("snapshot", no_wrap=True)
    t.add_column("time (UTC)", no_wrap=True)
    t.add_column("message", overflow="fold", ratio=2)
    for r in found:
        t.add_row(escape(r.name), r.snapshot[:SHORT_ID], r.written_at.strftime("%Y-%m-%d %H:%M"),
                  escape(names.line(r.message)))
    out.print(t)
    if not found:
        err.print(f"no {kind}es" if kind == "branch" else "no tags", highlight=False)


@app.command("reset")
def reset_cmd(store: Store, branch: Annotated[str, typer.Argument(help="The branch to move.")],
              ref: Annotated[str, typer.Argument(help="Where it goes (REF).")],
              tag: Annotated[str | None, typer.Option(help="First tag the current tip with this name, so it "
                                                           "survives gc.")] = None,
              wait: RefWait = 10.0, as_json: AsJson = False) -> None:
    """Roll a branch back (or forward) to REF. The commits it leaves stay readable by id (until
    gc), or by --tag."""
    from preprocess.store import refs

    js = "reset" if as_json else ""
    done = _guard(lambda: refs.reset_branch(_repo(store), branch, ref, keep_tag=tag, wait=wait), js)
    kept = f"tag {tag}" if tag else ("its id (gc deletes it unless another branch or tag reaches it; pass --tag "
                                     "to keep it)")
    _done(js, done.to_dict(), f"{branch}: already at {done.new}: nothing moved" if done.old == done.new else
          f"{branch}: {done.old} -> {done.new}; the old tip stays readable by {kept}")


@app.command("export")
def export_cmd(store: Store, out_dir: Annotated[str, typer.Argument(help="A new or empty directory.")],
               ref: Annotated[str, typer.Option(help="The version to export (REF, REF~N).")] = "main",
               manifest: Annotated[str, typer.Option("--format", help="Manifest: csv or parquet.")] = "csv",
               as_json: AsJson = False) -> None:
    """Write a version's images (OUT_DIR/images/<sha256[:16]>-<fingerprint>.<ext>) and a manifest with
    every row's fields (OUT_DIR/manifest.csv, or .parquet with embeddings)."""
    from preprocess.store import export

    js = "export" if as_json else ""
    interrupts.leaves(f"the export was removed: {names.quote(out_dir)} is as it was (the store was not changed)")
    done = _guard(lambda: export.export(_repo(store), out_dir, ref=ref, fmt=manifest), js)  # type: ignore[arg-type]
    _done(js, done.to_dict(), f"exported {done.files} images ({size(done.bytes)}) of {ref} ({done.ref['snapshot']}) "
                              f"to {names.quote(done.out_dir)}; manifest {names.quote(done.manifest)}")


@app.command("gc")
def gc_cmd(store: Store,
           older_than: Annotated[str, typer.Option(help="Only what became unreachable before this age: "
                                                        "30d, 12h, 90m, 2w (at least 1d on an object store, "
                                                        "where no lock keeps gc from a running job).")] = "30d",
           dry_run: Annotated[bool, typer.Option(help="Report, delete nothing.")] = False,
           wait: Wait = 0.0, as_json: AsJson = False) -> None:
    """Delete what no branch or tag reaches (commits left by resets and deleted branches, superseded
    chunks) and is older than --older-than. Branch and tag histories are never touched."""
    from preprocess.store import refs

    js = "gc" if as_json else ""
    done = _guard(lambda: refs.gc(_repo(store), refs.parse_age(older_than), dry_run=dry_run, wait=wait), js)
    verb = "would delete" if dry_run else "deleted"
    n = done.counts
    what = ", ".join(count(n[f"{k}s_deleted"], k) for k in ("snapshot", "manifest", "chunk"))
    _done(js, done.to_dict(), f"{verb} {what} ({size(n['bytes_deleted'])}) unreachable since before "
                              f"{_when(done.cutoff.isoformat())}")


def _done(js: str, value: Mapping[str, Json], line: str) -> None:
    if js:
        emit(js, value)
    else:
        out.print(line, highlight=False, soft_wrap=True)
