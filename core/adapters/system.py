"""The host, as psutil sees it: CPU, memory and load, and whether the host is too busy to take
one more task worker (the scaling policy's resource guard)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class HostLoad:
    cpu: float  # percent, since the reading before
    memory: float  # percent of physical memory in use
    load: float  # 1-minute load average per core (shown; it lags, so it guards nothing)
    cpu_limit: float = 95.0  # at or above: saturated (100: never)
    memory_limit: float = 90.0

    def saturated(self) -> str:
        """Why another worker would not help here ("" if it would)."""
        reasons = []
        if self.cpu >= self.cpu_limit < 100:
            reasons.append(f"CPU {self.cpu:.0f}% (limit {self.cpu_limit:.0f}%)")
        if self.memory >= self.memory_limit < 100:
            reasons.append(f"memory {self.memory:.0f}% (limit {self.memory_limit:.0f}%)")
        return ", ".join(reasons)

    def describe(self) -> str:
        return f"CPU {self.cpu:.0f}%, memory {self.memory:.0f}%, load {self.load:.2f}/core"


class SystemProbe:
    """Readings of this host; CPU is measured between one reading and the next."""

    def __init__(self, cpu_limit: float = 95.0, memory_limit: float = 90.0) -> None:
        self.cpu_limit, self.memory_limit = cpu_limit, memory_limit
        psutil.cpu_percent(interval=None)  # the first reading is meaningless: start the interval

    def read(self) -> HostLoad:
        return HostLoad(
            cpu=psutil.cpu_percent(interval=None),
            memory=psutil.virtual_memory().percent,
            load=os.getloadavg()[0] / (psutil.cpu_count() or 1),
            cpu_limit=self.cpu_limit,
            memory_limit=self.memory_limit,
        )


def disk_used(path: Path) -> float:
    """Percent of the disk under `path` in use (the nearest existing parent's)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return float(psutil.disk_usage(str(path)).percent)


def memory_used() -> float:
    return float(psutil.virtual_memory().percent)
