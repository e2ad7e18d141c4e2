"""Faults for the Ray tests, injected from the test process (nothing of this ships).

A test swaps :class:`~preprocess.drivers.ray.job.ProcessActor` or the write task for these
(``monkeypatch.setattr`` in the driver); Ray ships them to its workers by reference, so the
workers import this module (the test cluster puts the repository on their ``PYTHONPATH``). A fault
fires when its marker file exists in the folder named by ``$PREPROCESS_TEST_FAULTS``: ``NAME``
fires once (the marker is consumed, also across actor restarts), ``NAME.always`` every time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from preprocess.drivers.ray import job as ray_job

FAULTS_ENV = "PREPROCESS_TEST_FAULTS"


def fires(name: str) -> bool:
    folder = os.environ.get(FAULTS_ENV)
    if not folder:
        return False
    try:
        (Path(folder) / name).unlink()
    except FileNotFoundError:
        return (Path(folder) / f"{name}.always").exists()
    return True


class CrashingActor(ray_job.ProcessActor):
    """Kills its worker process (as an OOM kill would) on a batch while ``crash-actor`` is armed."""

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        if fires("crash-actor"):
            os._exit(1)
        return super().__call__(batch)


def failing_write_task(fork: Any, start: int, total_stop: int, *tables: pa.Table) -> Any:
    """A write task that raises while ``fail-write`` is armed."""
    if fires("fail-write"):
        raise RuntimeError("injected write failure")
    return ray_job._write_task(fork, start, total_stop, *tables)
