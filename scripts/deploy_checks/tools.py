"""Running the external tools the checks use."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .framework import fail


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    """Runs cmd to completion with its output captured as text (never left in a pipe)."""
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def tool(venv: Path, name: str) -> str:
    """The venv's copy of a tool, else the one on PATH; fails the check when neither exists."""
    for cand in (venv / "bin" / name, shutil.which(name)):
        if cand and Path(cand).exists():
            return str(cand)
    fail(f"{name} not found (scripts/check-deploy installs it)")


def site_packages(venv: Path) -> Path:
    r = run(
        [
            str(venv / "bin/python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ]
    )
    if r.returncode:
        fail(f"cannot ask {venv}/bin/python for its site-packages: {r.stderr.strip()}")
    return Path(r.stdout.strip())


def ldd(path: Path) -> list[tuple[str, str]]:
    """(library name, where it resolves or "not") for every library path loads."""
    r = run(["ldd", str(path)], env={"PATH": "/usr/bin:/bin"})
    if r.returncode:
        fail(f"ldd {path}: {r.stderr}")
    out = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            out.append((parts[0], parts[2] if len(parts) > 2 else "not"))
        elif parts and parts[0].startswith("/"):
            out.append((Path(parts[0]).name, parts[0]))
    return out


def http(method: str, url: str, body: object = None, timeout: float = 10) -> tuple[int, str]:
    """(status, body text) of one request; HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
