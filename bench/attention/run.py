"""Forward time and peak extra memory of the AFT variants against softmax attention, on CPU.

    .venv/bin/python bench/attention/run.py --out docs/

writes docs/attention-benchmark.{md,json,png}. Each (variant, T) case runs in its own subprocess
(2 threads): peak extra memory is the process's peak RSS (VmHWM, reset through
/proc/self/clear_refs once the inputs exist) minus its RSS at that point, so it counts every
temporary and the output; time is the median of up to 5 runs after that first one.
B = 1, d = 256; softmax attention uses 8 heads of 32; AFT-decay 8 heads with rates 2^-1 .. 2^-10
(AFTDecay's initial rates), in chunks of 64. AFT-local's w is a (T, T) view of 2T random numbers
(as_strided): it reads only the band, and a dense w would not fit at T = 65536 (16 GiB).
MALLOC_MMAP_THRESHOLD_=1048576: blocks over 1 MiB are mmapped and go back to the OS when freed,
so RSS follows the live tensors (glibc's default threshold rises to 32 MiB, and then a loop of
16 MiB temporaries showed as GiBs of heap growth). OMP_WAIT_POLICY=PASSIVE: on a shared 2-core
machine, OpenMP threads that spin-wait at barriers while another process holds the other core made
the small element-wise ops 10-100x slower.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
D, HEADS, WINDOW, KERNEL = 256, 8, 32, 31
TS = [128, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
VARIANTS = ["aft_full", "aft_local", "aft_simple", "aft_conv", "aft_decay", "sdpa", "softmax"]
# Cases that do not fit in memory (24 GiB, shared) or in the run's ~10 minutes.
SKIP = {
    ("aft_full", 32768): "its bias w is a T x T input: 4 GiB, and a run would take 4x its "
    "T = 16384 time",
    ("aft_full", 65536): "its bias w is a T x T input: 16 GiB",
    ("sdpa", 65536): "a run would take 4x its T = 32768 time (T^2): left out to keep the whole "
    "run under 10 minutes",
    ("softmax", 16384): "needs 2 x 8 GiB for the 8 x T x T scores and probabilities",
    ("softmax", 32768): "needs 2 x 32 GiB for the scores and probabilities",
    ("softmax", 65536): "needs 2 x 128 GiB for the scores and probabilities",
}
DECAY_RATES = [2.0 ** -(1 + 9 * i / (HEADS - 1)) for i in range(HEADS)]


def rss_kib(field: str) -> int:
    """VmRSS (current) or VmHWM (peak) of this process, in KiB."""
    line = next(
        x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field)
    )
    return int(line.split()[1])


def case(variant: str, T: int) -> dict:
    """Run in the subprocess: one variant at one length."""
    import torch
    from aft import functional as A

    torch.set_num_threads(2)
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, T, D) for _ in range(3))
    if variant == "aft_full":
        w = torch.randn(T, T).mul_(0.1)
    if variant == "aft_local":  # w[i, j] = base[i + j]: a (T, T) view; local reads its band
        w = torch.randn(2 * T).mul_(0.1).as_strided((T, T), (1, 1))
    if variant == "aft_decay":
        w = torch.tensor(DECAY_RATES)
    if variant == "aft_conv":
        k, w = torch.randn(1, T, HEADS), torch.randn(HEADS, KERNEL).mul_(0.1)
    if variant in ("sdpa", "softmax"):
        q, k, v = (x.view(1, T, HEADS, D // HEADS).transpose(1, 2) for x in (q, k, v))

    def run():
        if variant == "aft_full":
            return A.aft_full(q, k, v, w)
        if variant == "aft_local":
            return A.aft_local(q, k, v, w, WINDOW)
        if variant == "aft_simple":
            return A.aft_simple(q, k, v)
        if variant == "aft_conv":
            return A.aft_conv(q, k, v, w)
        if variant == "aft_decay":
            return A.aft_decay(q, k, v, w)
        if variant == "sdpa":
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // HEADS)
        return scores.softmax(-1) @ v

    with torch.no_grad():
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        base = rss_kib("VmRSS")
        t0 = time.perf_counter()
        out = run()
        first = time.perf_counter() - t0
        peak = rss_kib("VmHWM")
        assert torch.isfinite(out).all()
        del out
        times = [first]
        reps = 0 if first > 20 else 1 if first > 3 else 5
        for _ in range(reps):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    return {
        "variant": variant,
        "T": T,
        "ms": 1e3 * statistics.median(times[1:] or times),
        "peak_extra_mb": (peak - base) / 1024,
        "runs": max(1, len(times) - 1),
    }


def fit_exponent(rows, key, min_t=1024):
    """Least-squares slope of log(metric) against log(T), over T >= min_t."""
    pts = [(math.log(r["T"]), math.log(r[key])) for r in rows if r["T"] >= min_t and r[key] > 0]
    if len(pts) < 2:
        return float("nan")
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def load_note(results) -> str:
    """The machine's 1-minute load average as sampled before each case."""
    loads = sorted(r["load1"] for r in results if "load1" in r)
    if not loads:
        return "Load average not recorded."
    return (
        f"The 2-core machine was shared: 1-minute load average {loads[0]:.1f} to {loads[-1]:.1f} "
        f"(median {statistics.median(loads):.1f}) before the cases, so times are inflated "
        "against an idle machine, the more so the longer a case ran."
    )


def write_report(results, out: Path, command: str):
    by = {v: [r for r in results if r["variant"] == v] for v in VARIANTS}
    cpu = " / ".join(sorted({r.get("cpu", "CPU not recorded") for r in results}))
    lines = [
        "# Attention benchmark: AFT variants against softmax attention (CPU)",
        "",
        f"Made by `{command}` (bench/attention/run.py). Forward pass only, no autograd,",
        f"B = 1, d = {D}, float32, 2 threads (`torch.set_num_threads(2)`), torch "
        f"{results[0]['torch']}. AFT-local: window {WINDOW}; AFT-conv: {HEADS} heads, kernel "
        f"{KERNEL}; AFT-decay: {HEADS} heads, rates 2^-1 .. 2^-10 (`AFTDecay`'s initial ones), "
        f"chunks of 64; softmax attention: {HEADS} heads of {D // HEADS}. `sdpa` is "
        "`torch.nn.functional.scaled_dot_product_attention` (its CPU flash kernel); `softmax` "
        "materialises the (heads, T, T) scores.",
        "",
        "Peak extra memory: peak resident set of a fresh process per case (VmHWM, reset once q, "
        "k, v and w exist) minus the resident set then: every temporary plus the output. Small "
        "values are noisy (allocator caches, page granularity). Blocks over 1 MiB are mmapped "
        "(`MALLOC_MMAP_THRESHOLD_`) so that freed temporaries leave the resident set. Time: "
        "median of up to 5 runs after a first one (1 run when a run takes over 3 s; the first "
        "run alone when it takes over 20 s). `OMP_WAIT_POLICY=PASSIVE` keeps idle OpenMP "
        f"threads from spinning. {load_note(results)} Single runs at the largest T, so times "
        "are indicative. At T <= 256 (the T=128 column) AFT-local and -conv run as banded dense "
        "matrices (`aft.functional.DENSE_MAX`), above it on their O(T window d) band path. "
        "AFT-local's w is a (T, T) view of 2T random numbers (it reads only the band; a dense w "
        "would take 16 GiB at T = 65536).",
        "",
        "| variant | " + " | ".join(f"T={t}" for t in TS) + " |",
        "| --- | " + " | ".join("---" for _ in TS) + " |",
    ]
    for v in VARIANTS:
        cells = []
        for t in TS:
            r = next((r for r in by[v] if r["T"] == t), None)
            cells.append(
                "skipped" if r is None else f"{r['ms']:.1f} ms / {r['peak_extra_mb']:.0f} MB"
            )
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"CPU: {cpu}.",
        "",
        "Fitted exponent p of T (metric ~ T^p, least squares on log-log), over T >= 1024 and over "
        "T >= 4096 (closer to the asymptote: fixed overheads flatten the small-T end):",
        "",
        "| variant | memory p (T >= 1024) | memory p (T >= 4096) | time p (T >= 1024) "
        "| time p (T >= 4096) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in VARIANTS:
        fits = [
            fit_exponent(by[v], key, t) for key in ("peak_extra_mb", "ms") for t in (1024, 4096)
        ]
        lines.append(f"| {v} | " + " | ".join(f"{f:.2f}" for f in fits) + " |")
    lines += [
        "",
        f"CPU: {cpu}.",
        "",
        "Reading: the extra memory of every AFT variant grows about linearly in T (fixed "
        "overheads pull the fitted p below 1), as the paper claims; AFT-full stays linear "
        "because exp(w) is taken 256 rows at a time (w itself is a T x T input). The "
        "materialised softmax grows as T^2. AFT-simple, -local and -conv do work linear in T; "
        "their fitted time exponents still come out above 1 (most at T >= 4096, where every "
        "pass over a (T, d) array, one per band offset for local and conv, no longer fits the "
        "CPU caches and runs at memory bandwidth), but far below AFT-full's and the softmax "
        "attentions' quadratic ~2. PyTorch's CPU flash kernel (`sdpa`) keeps softmax "
        "attention's memory linear too, and its time is the same order as AFT-full's. "
        "AFT-decay, the position-aware variant with no length limit (no T x T input, no "
        "table), runs to T = 65536 with memory and time growing like AFT-simple's: its work is "
        "a few large matrix products (chunks of 64) and a dozen passes over (T, d), against "
        "one pass per band offset for local and conv, so past the shortest lengths it is "
        "faster than both and a small factor from AFT-simple, which has no position "
        "information at all. The AFT variants' time exponents are the least reliable figures "
        "here: the machine was shared (see the load above), and a busy neighbour slows the long "
        "cases most.",
    ]
    lines += ["", "Skipped:", ""]
    lines += [f"- {v} at T={t}: {why}" for (v, t), why in SKIP.items()]
    lines += ["", "![time and memory against T](attention-benchmark.png)", ""]
    (out / "attention-benchmark.md").write_text("\n".join(lines))
    (out / "attention-benchmark.json").write_text(json.dumps(results, indent=1) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for v in VARIANTS:
        rows = by[v]
        ts = [r["T"] for r in rows]
        axes[0].plot(ts, [r["ms"] for r in rows], "o-", label=v)
        axes[1].plot(ts, [max(r["peak_extra_mb"], 0.1) for r in rows], "o-", label=v)
    for ax, title in zip(axes, ["forward time (ms)", "peak extra memory (MB)"], strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"d={D}, B=1, CPU, 2 threads")
    fig.tight_layout()
    fig.savefig(out / "attention-benchmark.png", dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=str(ROOT / "docs"))
    p.add_argument("--max-t", type=int, default=max(TS))
    p.add_argument("--only", nargs="+", choices=VARIANTS, help="re-measure these variants only")
    p.add_argument("--report", action="store_true", help="only rewrite the report from the JSON")
    p.add_argument("--case", nargs=2, metavar=("VARIANT", "T"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        print(json.dumps(case(a.case[0], int(a.case[1]))))
        return
    import torch
    from harness.results import cpu  # installed by scripts/setup (bench/pyproject.toml)

    out = Path(a.out)
    command = ".venv/bin/python bench/attention/run.py --out docs/"
    if a.report:
        write_report(json.loads((out / "attention-benchmark.json").read_text()), out, command)
        return
    results = []
    if a.only:  # keep the other variants' rows from the last full run
        old = json.loads((out / "attention-benchmark.json").read_text())
        results = [r for r in old if r["variant"] not in a.only]
    for t in [t for t in TS if t <= a.max_t]:
        for v in a.only or VARIANTS:
            if (v, t) in SKIP:
                continue
            load1 = os.getloadavg()[0]
            cmd = [sys.executable, __file__, "--case", v, str(t)]
            env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", MALLOC_MMAP_THRESHOLD_="1048576")
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, env=env).stdout)
            r["torch"] = torch.__version__
            r["cpu"] = cpu()["cpu"]
            r["load1"] = load1
            print(f"{v:10s} T={t:6d} {r['ms']:10.1f} ms {r['peak_extra_mb']:9.1f} MB", flush=True)
            results.append(r)
    out.mkdir(parents=True, exist_ok=True)
    results.sort(key=lambda r: (r["T"], VARIANTS.index(r["variant"])))
    if a.only:
        command += f"`, then `{command} --only {' '.join(a.only)}"
    write_report(results, out, command)


if __name__ == "__main__":
    main()
