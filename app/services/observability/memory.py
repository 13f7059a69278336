"""This process's memory, as the kernel counts it (what an OOM killer or a cgroup limit looks at)."""

from __future__ import annotations

import os
import resource
from pathlib import Path

MIB = 1024 * 1024


def rss_mb() -> float:
    """Resident set size now, in MiB (Linux /proc; elsewhere the peak, which is an upper bound)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB
