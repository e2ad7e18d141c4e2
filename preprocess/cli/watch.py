"""`preprocess watch`: the watch-folder daemon."""

from __future__ import annotations

from typing import Annotated

import typer

from preprocess.cli.app import app, fail, quiet_libraries
from preprocess.cli.helptext import SPEC_HELP
from preprocess.core.errors import PreprocessError
from preprocess.pipeline.devices import choices

STORE_HELP = "The dataset: a local path or s3://bucket/prefix (created if missing)."


@app.command()
def watch(
    folder: Annotated[str, typer.Argument(help="The folder cameras or uploaders drop files into (watched "
                                                "recursively).")],
    store: Annotated[str, typer.Option("--store", "-s", help=STORE_HELP)],
    spec: Annotated[str | None, typer.Option(help=SPEC_HELP)] = None,
    branch: Annotated[str, typer.Option(help="Branch to commit to (one daemon per dataset).")] = "main",
    engine: Annotated[str, typer.Option(help="auto | dali | pillow (auto: DALI on a GPU, else pillow).")] = "auto",
    device: Annotated[str, typer.Option(help="auto | gpu | cpu.")] = "auto",
    commit_every: Annotated[int, typer.Option(help="Commit once this many images are uncommitted.")] = 500,
    commit_interval: Annotated[str, typer.Option(help="...or once the oldest uncommitted image is this old "
                                                      "(e.g. 30s, 500ms, 2m).")] = "30s",
    poll: Annotated[bool, typer.Option("--poll", help="Poll instead of inotify (automatic on NFS/SMB/FUSE).")] = False,
    poll_interval: Annotated[str, typer.Option(help="Polling interval.")] = "1s",
    quiet: Annotated[str, typer.Option(help="A file is taken once its size and mtime were stable this long "
                                            "(longer than any pause of a writer).")] = "2s",
    rescan_interval: Annotated[str, typer.Option(help="Full rescans of the folder (events can be lost).")] = "5m",
    queue_size: Annotated[int, typer.Option(help="Files queued at most (quiet period + ready); a burst beyond "
                                                 "it waits in the folder (backpressure).")] = 1000,
    batch_wait: Annotated[str, typer.Option(help="How long a partial batch waits for more files.")] = "500ms",
    move_to: Annotated[str | None, typer.Option(help="After their commit, move files to MOVE_TO/done/ and "
                                                     "MOVE_TO/failed/ (default: leave them untouched).")] = None,
    metrics: Annotated[str, typer.Option(help="HOST:PORT for /healthz, /readyz, /metrics (port 0: any free "
                                              "port; 'off' disables).")] = "127.0.0.1:9400",
    liveness_timeout: Annotated[str, typer.Option(help="/healthz fails when the loop is stuck this long.")] = "2m",
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks", help="Follow symlinks that lead outside FOLDER (found at rescans; default: such a "
                                  "link is a failure, E_SYMLINK_OUTSIDE, and its target is never read).")] = False,
    log_format: Annotated[str, typer.Option(help="text | json (one JSON object per line).")] = "text",
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error.")] = "info",
    message: Annotated[str, typer.Option("--message", "-m", help="Commit message (default: counts).")] = "",
    wait: Annotated[float, typer.Option(min=0.0, help="Seconds to wait at start while another process writes the "
                                            "dataset (default: fail at once).")] = 0.0,
) -> None:
    """Watch FOLDER and turn every new image into a committed row of the dataset at --store.

    Until SIGTERM/SIGINT/SIGHUP: then finishes its batch, commits, exits 0 (twice: 130).
    A full disk is retried (/readyz says why). Exit 2: bad spec, options, paths or
    --metrics in use (nothing made); 4 STORE_LOCKED or WATCH_FOLDER_BUSY; 5 storage; 6 GPU; 70 internal."""
    from preprocess.drivers.watch import WatchOptions, parse_address, parse_duration, run_watch
    from preprocess.drivers.watch.logs import configure

    quiet_libraries()
    try:
        configure(log_format, log_level)
        engine_choice, device_choice = choices(engine, device)
        opts = WatchOptions(
            folder=folder, store=store, spec_path=spec, branch=branch, engine=engine_choice, device=device_choice,
            commit_every=commit_every, commit_interval=parse_duration(commit_interval, name="--commit-interval"),
            poll=poll, poll_interval=parse_duration(poll_interval, name="--poll-interval"),
            quiet=parse_duration(quiet, name="--quiet"),
            rescan_interval=parse_duration(rescan_interval, name="--rescan-interval"), queue_size=queue_size,
            batch_wait=parse_duration(batch_wait, name="--batch-wait"), move_to=move_to,
            metrics=parse_address(metrics), liveness_timeout=parse_duration(liveness_timeout,
                                                                            name="--liveness-timeout"),
            message=message, wait=wait, follow_symlinks=follow_symlinks)
        code = run_watch(opts)
    except PreprocessError as exc:
        fail(exc)
        return
    raise typer.Exit(code)
