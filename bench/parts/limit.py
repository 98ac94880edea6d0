"""The in-process limit: examples/forward_bench (the library's batcher, bundle and backend,
without HTTP) at the service's batch shapes, plus matmul GFLOP/s and the model's FLOPs."""

from __future__ import annotations

import json
import subprocess

from harness import BENCH, CORPUS, PYTHON, ROOT, log
from harness.context import Context

EXAMPLE = ROOT / "target" / "release" / "examples" / "forward_bench"


def run(ctx: Context) -> None:
    # bench/run-all sources scripts/env.sh, which sets what cargo needs for tch.
    log("building examples/forward_bench (release)")
    cargo = ["cargo", "build", "--release", "--locked", "--example", "forward_bench"]
    subprocess.run(cargo, cwd=ROOT, check=True)
    raw = ctx.results.dir / "raw" / "forward_bench.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    p = ctx.plan
    cmd = [str(EXAMPLE), "--model-dir", str(ctx.model_dir), "--corpus", str(CORPUS)]
    cmd += ["--seconds", str(p.limit_s), "--json", str(raw), "--configs", p.limit_configs]
    cmd += ["--max-batch-tokens", p.limit_mbt, "--queue-depths", p.limit_depths]
    log(" ".join(cmd))
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    data = json.loads(raw.read_text())
    data["command"] = " ".join(cmd)
    data["flops"] = model_flops(ctx)
    ctx.write("limit", data)


def model_flops(ctx: Context) -> dict:
    """bench/flops.py: FLOPs per token from the manifest's hyper-parameters, checked against
    torch's FLOP counter on the TorchScript module."""
    out = subprocess.run(
        [PYTHON, str(BENCH / "flops.py"), str(ctx.model_dir), str(CORPUS)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout)
