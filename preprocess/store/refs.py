"""Naming versions of the dataset and moving names: resolve, tag, branch, reset, gc.

A REF is a branch, a tag (``branch:NAME``, ``tag:NAME``: that ref alone) or a snapshot id or a unique prefix
of 4+ characters, any case. Branches win over tags; a name that is also the start of another snapshot's id is
REF_AMBIGUOUS. ``REF~N`` is the Nth first-parent ancestor, as in git (``main~1``; ``REF~`` is ``REF~1``; steps
add up); ``HEAD`` is main's tip. Snapshots no ref reaches (after a reset or a deletion) stay readable by id
until :func:`gc` deletes them.

Deleting a branch some job may be committing to is refused: on a local store the writer lock says
which branches its holder writes (:func:`preprocess.store.lock.lock_holder`). Object stores have
no lock, so there the delete goes through, and a job still writing to that branch fails at its commit
(icechunk: the branch is gone) and commits nothing.

On local stores, tag, branch and reset hold the refs lock for a moment (icechunk keeps every ref in
one object, so a tag made during a commit could otherwise be lost; they work while a job or the
watch daemon writes), and gc holds the writer lock too (it must not delete the chunks of a job that
has not committed yet; on an object store it keeps what is younger than a day instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

import icechunk as ic

from preprocess.core.codes import ErrorCode
from preprocess.core.errors import ConfigError, ConflictError, NotFoundError, did_you_mean
from preprocess.core.units import count
from preprocess.store.lock import LOCK_FILE, REFS_LOCK_FILE, local_root, lock_holder, lock_repo
from preprocess.store.storage import storage_call, storage_error

RefKind = Literal["branch", "tag", "snapshot"]

SNAPSHOT_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{20}\Z")  # icechunk's ids: Crockford base32, 20 characters
_PREFIX = re.compile(r"^[0-9A-Za-z]{4,19}\Z")
MAX_NAME = 100  # a longer name is cut in its error (a 5,000-character one was echoed whole)
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._/-]{{0,{MAX_NAME - 1}}}\Z")
_ANCESTOR = re.compile(r"^(?P<base>[^~]+)(?P<steps>(?:~\d{0,6})+)\Z")  # REF~N (git's first-parent steps)
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*\Z")
_AGE_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
REF_WAIT = 10.0  # seconds tag/branch/reset wait for a commit in progress (a moment)
DEFAULT_BRANCH = "main"
HEAD = "HEAD"  # an alias of DEFAULT_BRANCH's tip, as git's HEAD names the current branch's


@dataclass(frozen=True)
class Ref:
    """A resolved REF: what the user wrote, what it named, and the snapshot it points at."""

    name: str
    kind: RefKind
    snapshot: str

    def to_dict(self) -> dict[str, str]:
        return {"ref": self.name, "kind": self.kind, "snapshot": self.snapshot}


@dataclass(frozen=True)
class RefInfo:
    """A branch or a tag as ``preprocess branch|tag STORE`` lists it: its tip and that commit's time and message."""

    name: str
    kind: Literal["branch", "tag"]
    snapshot: str
    written_at: datetime
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "snapshot": self.snapshot,
                "written_at": self.written_at.isoformat(), "message": self.message}


@dataclass(frozen=True)
class Reset:
    branch: str
    old: str  # the tip before the reset: still readable by id (until gc), or by ``tag``
    new: str
    tag: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {"branch": self.branch, "old": self.old, "new": self.new, "tag": self.tag}


@dataclass(frozen=True)
class Collected:
    """What :func:`gc` found (and, unless a dry run, deleted)."""

    cutoff: datetime
    dry_run: bool
    snapshots: list[str]  # unreachable snapshot ids older than the cutoff
    counts: dict[str, int]  # icechunk's GC summary: snapshots/manifests/chunks/... deleted, bytes

    def to_dict(self) -> dict[str, str | bool | int | list[str]]:
        return {"cutoff": self.cutoff.isoformat(), "dry_run": self.dry_run, "snapshots": self.snapshots,
                **self.counts}


def branches(repo: ic.Repository) -> set[str]:
    return set(storage_call("list branches", repo.list_branches))


def tags(repo: ic.Repository) -> set[str]:
    return set(storage_call("list tags", repo.list_tags))


def _exists(repo: ic.Repository, snapshot: str) -> bool:
    try:
        repo.lookup_snapshot(snapshot)
    except (ic.NotFoundError, ic.InvalidInputError):
        return False
    except ic.IcechunkError as exc:
        if "not found" in str(exc):
            return False
        raise storage_error(exc, f"look up snapshot {snapshot}") from exc
    return True


def known_snapshots(repo: ic.Repository, reached: set[str] | None = None) -> set[str]:
    """Every snapshot id still stored: the history of every branch and tag (``reached``, when the caller has
    it), plus every commit and former tip in the operations log (unreachable ones until gc removes them)."""
    ids = set(reachable(repo) if reached is None else reached)
    for update in storage_call("read the operations log", lambda: list(repo.ops_log())):
        for attr in ("new_snap_id", "previous_snap_id", "snap_id", "snapshot_id"):
            value = getattr(update.kind, attr, None)
            if isinstance(value, str) and value not in ids and _exists(repo, value):
                ids.add(value)
    return ids


def reachable(repo: ic.Repository) -> set[str]:
    """Snapshot ids in the history of some branch or tag (what gc never deletes)."""
    ids: set[str] = set()
    for b in branches(repo):
        ids.update(s.id for s in history(repo, branch=b))
    for t in tags(repo):
        ids.update(s.id for s in history(repo, tag=t))
    return ids


def history(repo: ic.Repository, *, branch: str | None = None, tag: str | None = None,
            snapshot: str | None = None) -> list[ic.SnapshotInfo]:
    """The ancestry of one ref, newest first (down to the repository's first snapshot)."""
    return storage_call("read the history", lambda: list(repo.ancestry(branch=branch, tag=tag, snapshot_id=snapshot)))


def branch_tip(repo: ic.Repository, branch: str) -> str:
    return str(storage_call("look up a branch", lambda: repo.lookup_branch(branch)))


def tag_target(repo: ic.Repository, tag: str) -> str:
    return str(storage_call("look up a tag", lambda: repo.lookup_tag(tag)))


def snapshot_info(repo: ic.Repository, snapshot: str) -> ic.SnapshotInfo:
    return storage_call("look up a snapshot", lambda: repo.lookup_snapshot(snapshot))


def labels(repo: ic.Repository) -> dict[str, list[str]]:
    """Snapshot id -> the branches and tags pointing at it (``main``, ``tag:v1``)."""
    out: dict[str, list[str]] = {}
    for b in sorted(branches(repo)):
        out.setdefault(branch_tip(repo, b), []).append(b)
    for t in sorted(tags(repo)):
        out.setdefault(tag_target(repo, t), []).append(f"tag:{t}")
    return out


def resolve_ref(repo: ic.Repository, ref: str) -> Ref:
    """A branch, tag, snapshot id or unique snapshot id prefix, optionally followed by ``~N`` (the
    Nth first-parent ancestor) -> :class:`Ref`.

    ConfigError REF_MISSING (nothing by that name, with the closest names; or fewer than N commits
    before it), REF_AMBIGUOUS (a prefix of several snapshots).
    """
    if not ref.strip():
        raise NotFoundError("empty REF: name a branch, a tag or a snapshot id", code=ErrorCode.REF_MISSING,
                          hint=_names_hint(repo))
    steps = _ANCESTOR.match(ref)
    if steps is None:
        return _resolve_name(repo, ref)
    base = _resolve_name(repo, steps["base"])
    n = sum(int(step or "1") for step in steps["steps"].split("~")[1:])
    line = history(repo, snapshot=base.snapshot)  # base first, then its first parents
    if n >= len(line):
        raise NotFoundError(f"{ref!r}: {steps['base']!r} has only {count(len(line) - 1, 'commit')} before it "
                          "(counting the repository's first, empty one)", code=ErrorCode.REF_MISSING,
                          hint=f"`preprocess log STORE {steps['base']}` lists them")
    return Ref(ref, "snapshot", line[n].id)


def _resolve_name(repo: ic.Repository, ref: str) -> Ref:
    if ref.startswith(("branch:", "tag:")):
        return _named(repo, ref)
    if ref in branches(repo):
        return _unambiguous(repo, Ref(ref, "branch", branch_tip(repo, ref)))
    if ref in tags(repo):
        return _unambiguous(repo, Ref(ref, "tag", tag_target(repo, ref)))
    if ref == HEAD:  # the tip of the branch every command reads by default (a branch named HEAD wins, as above)
        return Ref(ref, "branch", branch_tip(repo, DEFAULT_BRANCH))
    upper = ref.upper()
    if SNAPSHOT_ID.match(upper) and _exists(repo, upper):
        return Ref(ref, "snapshot", upper)
    if _PREFIX.match(ref):
        found = sorted(s for s in snapshot_ids(repo)[0] if s.startswith(upper) and _exists(repo, s))  # gc since?
        if len(found) == 1:
            return Ref(ref, "snapshot", found[0])
        if len(found) > 1:
            raise NotFoundError(f"{ref!r} is a prefix of {len(found)} snapshots: {', '.join(found[:5])}",
                              code=ErrorCode.REF_AMBIGUOUS, hint="give more characters of the snapshot id")
    raise NotFoundError(f"{ref!r} is not a branch, tag or snapshot of this dataset{did_you_mean(ref, _names(repo))}",
                      code=ErrorCode.REF_MISSING, hint=_names_hint(repo))


def _named(repo: ic.Repository, ref: str) -> Ref:
    """``tag:NAME``, ``branch:NAME`` (as `log` decorates): that ref, never a snapshot id."""
    kind, _, name = ref.partition(":")
    if kind == "branch" and name in branches(repo):
        return Ref(ref, "branch", branch_tip(repo, name))
    if kind == "tag" and name in tags(repo):
        return Ref(ref, "tag", tag_target(repo, name))
    raise NotFoundError(f"{ref!r}: no {kind} {name!r}{did_you_mean(name, _names(repo))}",
                        code=ErrorCode.REF_MISSING, hint=_names_hint(repo))


@lru_cache(maxsize=8)  # by the refs' tips (``key``): a web UI resolves a ref and shows a commit at every request
def _ids(repo: ic.Repository, key: str) -> tuple[frozenset[str], frozenset[str]]:
    return frozenset(known_snapshots(repo, reached := reachable(repo))), frozenset(reached)


def snapshot_ids(repo: ic.Repository) -> tuple[frozenset[str], frozenset[str]]:
    """(:func:`known_snapshots`, :func:`reachable`), read once per state of the refs (a change of one moves a tip)."""
    return _ids(repo, repr(sorted(labels(repo).items())))


def _id_prefix_of(repo: ic.Repository, name: str) -> list[str]:
    """The snapshots whose id ``name`` is a prefix of (4+ characters; none for a name that cannot be one)."""
    upper = name.upper()
    if not (_PREFIX.match(name) and SNAPSHOT_ID.match(upper.ljust(20, "0"))):
        return []
    return sorted(s for s in snapshot_ids(repo)[0] if s.startswith(upper) and _exists(repo, s))


def _unambiguous(repo: ic.Repository, ref: Ref) -> Ref:
    """``ref`` (a branch or tag) unless its name starts another snapshot's id (REF_AMBIGUOUS, as git says)."""
    if other := [s for s in _id_prefix_of(repo, ref.name) if s != ref.snapshot]:
        raise NotFoundError(f"{ref.name!r} is ambiguous: a {ref.kind} and the start of snapshot {other[0]}'s id",
                            code=ErrorCode.REF_AMBIGUOUS, hint=f"say {ref.kind}:{ref.name}, or more of the snapshot id")
    return ref


def _names(repo: ic.Repository) -> set[str]:
    return branches(repo) | tags(repo)


def _names_hint(repo: ic.Repository) -> str:
    tag_list = sorted(tags(repo))
    shown = ", ".join(tag_list[:10]) + (" ..." if len(tag_list) > 10 else "")
    return (f"branches: {', '.join(sorted(branches(repo)))}; tags: {shown or 'none'}; snapshot ids "
            "(or a unique prefix of 4+ characters) are listed by `preprocess log`")


def session(repo: ic.Repository, ref: Ref) -> ic.Session:
    """A read-only session on the snapshot ``ref`` resolved to (pinned: a branch moving later
    does not change what it reads)."""
    return storage_call(f"read {ref.name!r}", lambda: repo.readonly_session(snapshot_id=ref.snapshot))


def _check_name(repo: ic.Repository, name: str, what: str) -> None:
    if len(name) > MAX_NAME:
        raise ConfigError(f"{name[:40]!r}... ({len(name)} characters) is not a usable {what} name: at most "
                          f"{MAX_NAME}", code=ErrorCode.REF_NAME, hint=f"choose a shorter {what} name")
    if not _NAME.match(name) or ".." in name or name.endswith(("/", ".lock")):
        raise ConfigError(f"{name!r} is not a usable {what} name", code=ErrorCode.REF_NAME,
                          hint="use letters, digits and . _ / - (starting with a letter or digit)")
    if name == HEAD:
        raise ConfigError(f"{name!r} is not a usable {what} name: it names {DEFAULT_BRANCH}'s tip",
                          code=ErrorCode.REF_NAME, hint=f"choose another {what} name")
    if SNAPSHOT_ID.match(name.upper()):
        raise ConfigError(f"{name!r} looks like a snapshot id", code=ErrorCode.REF_NAME,
                          hint=f"choose a {what} name that cannot be mistaken for a snapshot id")
    if found := _id_prefix_of(repo, name):  # its name would read that snapshot, or make its prefix read the ref
        raise ConfigError(f"{name!r} is the start of snapshot {found[0]}'s id", code=ErrorCode.REF_NAME,
                          hint=f"choose a {what} name that is not the start of a snapshot id")
    if name in branches(repo):
        raise ConfigError(f"{name!r} is already a branch", code=ErrorCode.REF_EXISTS,
                          hint="choose another name (`preprocess reset` moves an existing branch)")
    if name in tags(repo):
        raise ConfigError(f"{name!r} is already a tag", code=ErrorCode.REF_EXISTS,
                          hint="tags never move; choose another name")


def create_tag(repo: ic.Repository, name: str, ref: str = "main", *, wait: float = REF_WAIT) -> Ref:
    """Tag the snapshot ``ref`` names. Tags are immutable, and icechunk never reuses a deleted
    tag's name."""
    with _locked(repo, wait, f"tag {name}"):
        target = resolve_ref(repo, ref)
        _check_name(repo, name, "tag")
        _mutate(f"create tag {name!r}", lambda: repo.create_tag(name, target.snapshot))
    return Ref(name, "tag", target.snapshot)


def create_branch(repo: ic.Repository, name: str, ref: str = "main", *, wait: float = REF_WAIT) -> Ref:
    """A new branch at the snapshot ``ref`` names (jobs can then commit to it: ``--branch``)."""
    with _locked(repo, wait, f"branch {name}"):
        target = resolve_ref(repo, ref)
        _check_name(repo, name, "branch")
        _mutate(f"create branch {name!r}", lambda: repo.create_branch(name, target.snapshot))
    return Ref(name, "branch", target.snapshot)


def reset_branch(repo: ic.Repository, branch: str, ref: str, *, keep_tag: str | None = None,
                 wait: float = REF_WAIT) -> Reset:
    """Point ``branch`` at the snapshot ``ref`` names. The former tip stays readable by its id
    until gc, and for good with ``keep_tag`` (a tag made at the former tip first)."""
    with _locked(repo, wait, f"reset {branch}"):
        _need(repo, branch, "branch")
        old = branch_tip(repo, branch)
        target = resolve_ref(repo, ref)
        if keep_tag:
            _check_name(repo, keep_tag, "tag")
            _mutate(f"create tag {keep_tag!r}", lambda: repo.create_tag(keep_tag, old))
        _mutate(f"reset branch {branch!r}",
                lambda: repo.reset_branch(branch, target.snapshot, from_snapshot_id=old))
    return Reset(branch, old, target.snapshot, keep_tag)


def list_refs(repo: ic.Repository, kind: Literal["branch", "tag"]) -> list[RefInfo]:
    """Every branch (or tag), by name, with its tip commit's time and message."""
    names, target = (branches(repo), branch_tip) if kind == "branch" else (tags(repo), tag_target)
    out = []
    for name in sorted(names):
        info = snapshot_info(repo, target(repo, name))
        out.append(RefInfo(name, kind, info.id, info.written_at, info.message))
    return out


def delete_branch(repo: ic.Repository, name: str, *, wait: float = REF_WAIT) -> Ref:
    """Delete a branch; returns where it pointed (that snapshot stays readable by id until gc).

    Refused: ``main`` (BRANCH_MAIN; reset it instead), a missing branch (BRANCH_MISSING), and on a
    local store a branch the writer lock's holder (a job, the watch daemon) may be committing to
    (ConflictError BRANCH_BUSY). See the module's note on object stores.
    """
    with _locked(repo, wait, f"delete branch {name}"):
        _need(repo, name, "branch")
        if name == "main":
            raise ConfigError("the main branch cannot be deleted", code=ErrorCode.BRANCH_MAIN,
                              hint="move it instead: `preprocess reset STORE main REF`")
        root = local_root(repo)
        holder = lock_holder(root) if root is not None else None
        if holder is not None and holder.writes(name):
            raise ConflictError(f"branch {name!r} is being written by {holder}: not deleted",
                                code=ErrorCode.BRANCH_BUSY,
                                hint="delete it after that job ends (or the watch daemon stops)")
        tip = branch_tip(repo, name)
        _mutate(f"delete branch {name!r}", lambda: repo.delete_branch(name))
    return Ref(name, "branch", tip)


def delete_tag(repo: ic.Repository, name: str, *, wait: float = REF_WAIT) -> Ref:
    """Delete a tag; returns where it pointed (readable by id until gc). icechunk never lets a
    deleted tag's name be used again."""
    with _locked(repo, wait, f"delete tag {name}"):
        _need(repo, name, "tag")
        target = tag_target(repo, name)
        _mutate(f"delete tag {name!r}", lambda: repo.delete_tag(name))
    return Ref(name, "tag", target)


def _need(repo: ic.Repository, name: str, what: Literal["branch", "tag"]) -> None:
    """ConfigError BRANCH_MISSING / TAG_MISSING (with the closest names) unless ``name`` exists."""
    names = branches(repo) if what == "branch" else tags(repo)
    if name not in names:
        raise NotFoundError(f"{what} {name!r} does not exist{did_you_mean(name, names)}",
                          code=ErrorCode(f"{what.upper()}_MISSING"), hint=_names_hint(repo))


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` -> timedelta."""
    m = _AGE.match(text)
    if not m:
        raise ConfigError(f"{text!r} is not an age", code=ErrorCode.GC_AGE, hint="write e.g. 30d, 12h, 90m, 45s or 2w")
    return timedelta(seconds=float(m.group(1)) * _AGE_UNIT[m.group(2)])


def gc(repo: ic.Repository, older_than: timedelta, *, dry_run: bool = False, wait: float = 0.0,
       now: datetime | None = None) -> Collected:
    """Delete what no ref reaches and is older than ``older_than`` (snapshots left by resets and deletions, their
    manifests and chunks, superseded chunks); every ref's history is kept whole (no ``expire_snapshots``)."""
    if local_root(repo) is None and older_than < REMOTE_GC_AGE and not dry_run:  # no lock reaches an object store
        raise ConfigError("--older-than under 1d on an object store: gc would delete the files a running job has "
                          "written and not yet committed, and that job's commit would point at them",
                          code=ErrorCode.GC_AGE, hint="give --older-than 1d or more (longer than any job takes); "
                                                      "--dry-run shows what a shorter age would delete")
    cutoff = (now or datetime.now(UTC)) - older_than
    with _locked(repo, wait, "gc", writer=True):
        keep = reachable(repo)
        gone = []
        for snap in sorted(known_snapshots(repo, keep) - keep):
            if snapshot_info(repo, snap).written_at < cutoff:
                gone.append(snap)
        summary = _mutate("garbage-collect", lambda: repo.garbage_collect(cutoff, dry_run=dry_run))
    counts = {name: int(getattr(summary, name)) for name in (
        "snapshots_deleted", "manifests_deleted", "chunks_deleted", "attributes_deleted",
        "transaction_logs_deleted", "bytes_deleted", "objects_failed_to_delete")}
    return Collected(cutoff=cutoff, dry_run=dry_run, snapshots=gone, counts=counts)


# gc on an object store keeps what is younger: a running job's files are unreachable until it commits (an audit)
REMOTE_GC_AGE = timedelta(days=1)


@contextmanager
def _locked(repo: ic.Repository, wait: float, purpose: str, *, writer: bool = False) -> Iterator[None]:
    """The refs lock (and first the writer lock, with ``writer``) of a local store."""
    names = [LOCK_FILE, REFS_LOCK_FILE] if writer else [REFS_LOCK_FILE]
    held = []
    try:
        for name in names:
            lock = lock_repo(repo, wait=wait, purpose=purpose, name=name)
            if lock is not None:
                held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()


def _mutate[T](action: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except ic.ConflictError as exc:
        raise ConflictError(f"cannot {action}: the dataset's refs changed meanwhile", code=ErrorCode.REF_CONFLICT,
                            hint="look at `preprocess log` and run the command again") from exc
    except ic.AlreadyExistsError as exc:
        said = str(exc).splitlines()[0]
        if "already deleted" in said:  # icechunk: "does not allow tag reuse and tag was already deleted `t1`"
            said = "a tag by that name was deleted, and a deleted tag's name is never used again"
        raise ConfigError(f"cannot {action}: {said}", code=ErrorCode.REF_EXISTS,
                          hint="choose another name (icechunk keeps deleted tags' names so that a name never "
                               "means two versions)") from exc
    except ic.IcechunkError as exc:
        raise storage_error(exc, action) from exc

