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
    info |= cpu()
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


def cpu() -> dict:
    """The CPU, the one place that describes it: the model name (/proc/cpuinfo, as lscpu shows it),
    the vector and matrix flags that decide which kernels torch and libtorch pick (AVX, AVX-512
    and its VNNI and bf16 parts, AMX), whether it is a virtual machine, and `cpu`, the one-line
    description every table's caption quotes (`describe_cpu`)."""
    info: dict = {}
    with contextlib.suppress(OSError, AttributeError):
        text = Path("/proc/cpuinfo").read_text()
        info["cpu_model"] = re.search(r"model name\s*:\s*(.*)", text).group(1)  # type: ignore[union-attr]
        flags = re.search(r"flags\s*:\s*(.*)", text).group(1).split()  # type: ignore[union-attr]
        info["cpu_flags"] = [f for f in flags if f.startswith(("avx", "fma", "amx"))]
        info["cpu_virtual"] = "hypervisor" in flags
    info["cpu"] = describe_cpu(info | {"nproc": os.cpu_count()})
    return info


def describe_cpu(machine: dict) -> str:
    """'AMD EPYC (2 vCPUs; AVX-512 incl. VNNI and bf16, no AMX)' from a machine() record (older
    records without cpu_virtual say CPUs); 'CPU not recorded' when it has no model name."""
    name = machine.get("cpu_model")
    if not name:
        return "CPU not recorded"
    flags = set(machine.get("cpu_flags") or ())
    if "avx512f" in flags:
        parts = [x for f, x in (("avx512_vnni", "VNNI"), ("avx512_bf16", "bf16")) if f in flags]
        isa = "AVX-512" + (" incl. " + " and ".join(parts) if parts else "")
    else:
        isa = "AVX2" if "avx2" in flags else "no AVX2"
        isa += ", AVX-VNNI" if "avx_vnni" in flags else ""
    isa += ", AMX" if any(f.startswith("amx") for f in flags) else ", no AMX"
    n = machine.get("nproc")
    count = f"{n} {'vCPUs' if machine.get('cpu_virtual') else 'CPUs'}; " if n else ""
    return f"{name} ({count}{isa})"


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
