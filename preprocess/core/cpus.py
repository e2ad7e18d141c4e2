"""How many CPUs this process may use: the one rule every thread count follows (Processor lanes, DALI
and nvImageCodec threads, onnxruntime intra-op threads), so a container's CPU quota is respected."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_lanes(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a container's
    CPU limit, e.g. Kubernetes ``limits.cpu``: ``400000 100000`` is 4 CPUs) when there is one."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file, or not in the expected form
        pass
    return n


def cpu_share(parts: int) -> int:
    """Threads for one of ``parts`` equal consumers of this process's CPUs (at least one)."""
    return max(1, cpu_lanes() // max(1, parts))
