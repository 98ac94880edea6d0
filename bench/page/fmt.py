"""Number formatting, Markdown tables and server labels for the page."""

from __future__ import annotations

# Table order: the service first, then the peer closest to it.
KINDS = ("aft-serve", "python-batched", "python-plain")
LABEL = {
    "aft-serve": "aft-serve",
    "python-plain": "Python plain (FastAPI, 1 forward/request)",
    "python-batched": "Python batched (FastAPI + asyncio batching)",
}
COLOR = {"aft-serve": "tab:blue", "python-plain": "tab:red", "python-batched": "tab:orange"}


def f(v, digits: int = 1) -> str:
    """A number with thousands separators; – for a missing one."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def pct(v: float | None, digits: int = 1, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{100 * v:+.{digits}f}%" if sign else f"{100 * v:.{digits}f}%"


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def table(header: list[str], rows: list[list], cpu: str | None = None) -> str:
    """A Markdown table; `cpu` (Run.cpu), for a table of timings, goes on a line under it."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n" + (f"\nCPU: {cpu}.\n" if cpu else "")


def pass_fail(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def codes(status_codes: dict) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(status_codes.items()))
