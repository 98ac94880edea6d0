"""results/<part>.json: each part's measurements plus the facts of the run that produced them
(machine, software versions, model bundle, plan), which the report quotes instead of constants."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from harness import ROOT, log

PYTHON_PACKAGES = ("torch", "fastapi", "uvicorn", "tokenizers")


class Results:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, part: str) -> Path:
        return self.dir / f"{part}.json"

    def read(self, part: str) -> dict | None:
        p = self.path(part)
        return json.loads(p.read_text()) if p.exists() else None

    def write(self, part: str, data: dict, facts: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.path(part)
        p.write_text(json.dumps({**data, "run": facts}, indent=1))
        log(f"wrote {p}")

    def all(self) -> dict[str, dict]:
        """Every part's results found, by part name."""
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.dir.glob("*.json"))}


def machine() -> dict:
    """CPU, memory, kernel, tool versions, and what else was running when a part started."""
    info: dict = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with contextlib.suppress(OSError, AttributeError):
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = re.search(r"model name\s*:\s*(.*)", cpu).group(1)  # type: ignore[union-attr]
        flags = re.search(r"flags\s*:\s*(.*)", cpu).group(1).split()  # type: ignore[union-attr]
        info["cpu_flags"] = [f for f in flags if f.startswith(("avx", "fma", "amx"))]
    info["nproc"] = os.cpu_count()
    info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    info["kernel"] = platform.release()
    info["loadavg_before"] = os.getloadavg()
    info["python"] = sys.version.split()[0]
    info["python_packages"] = {}
    for name in PYTHON_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            info["python_packages"][name] = metadata.version(name)
    info["rustc"] = _output(["rustc", "--version"])
    info["git_commit"] = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    top = (_output(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"]) or "").splitlines()[1:6]
    info["top_processes_before"] = [t.strip() for t in top]
    return info


def model(model_dir: Path) -> dict:
    """The bundle measured: its name, when it was exported and model.pt's hash."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    return {
        "dir": str(model_dir),
        "name": manifest.get("name"),
        "created_at": manifest.get("created_at"),
        "model_pt_sha256": manifest.get("files", {}).get("model.pt", {}).get("sha256"),
        "hyper_parameters": manifest.get("model"),
    }


def _output(cmd: list[str]) -> str | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
