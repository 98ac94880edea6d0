"""A process's peak resident memory over one stretch of work, from the kernel's own high-water
mark (Linux): reset VmHWM to the current RSS (`5` to /proc/PID/clear_refs), do the work, read
VmHWM. Exact where a sampler can miss a short peak; needs the right to write the process's
clear_refs (its owner or root)."""

from __future__ import annotations

import os
from pathlib import Path


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def rss_bytes(pid: int | None = None) -> int:
    return _status_kib(pid or os.getpid(), "VmRSS") * 1024


def peak_bytes(pid: int | None = None) -> int:
    """VmHWM: the most resident memory since the process started or since reset_peak."""
    return _status_kib(pid or os.getpid(), "VmHWM") * 1024


def reset_peak(pid: int | None = None) -> None:
    """Sets VmHWM back to the current RSS (Linux 4.0 and later)."""
    Path(f"/proc/{pid or os.getpid()}/clear_refs").write_text("5")
