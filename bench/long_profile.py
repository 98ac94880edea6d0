"""Where the time of one long-document pass goes, per op group, against the machine's matmul rate
(issue 24): one document of T tokens (batch 1) with 256-token spans pooled from the same pass
(late chunking), at each of `--tokens`.

  eager    the bundle's model rebuilt eagerly (aft.bundle.load_eager), run op group by op group
           under record_function: token embedding, q/k/v projections, the AFT-decay mixing in
           its parts (chunk layout, exp weights, edge sums and carries, intra-chunk bmm, carried
           terms, output), output projection, FFN, LayerNorms, pooling, span pooling, other
           (residual adds, the time between groups); checked against model.embed_spans
  scripted model.pt's embed_spans in process, as the service runs it (an AFT-decay bundle
           exported since slice_tokens runs a long input slice by slice, models/aft/encoder.py);
           the same TorchScript with slice_tokens 0 (the whole sequence at once, as the eager
           groups and the bundles before slicing), and at each of --slice-tokens
  service  aft-serve (target/release/aft-serve) answering POST /v1/embed with chunking: the
           request's wall time and its forward pass (aft_inference_duration_seconds), with
           `--precision float` (model.pt, as in process) unless `--precision` says otherwise:
           the service's own default serves a bundle's int8 copy where it has one. Inputs
           over --max-batch-tokens go to its long-input lane, whose threads run at SCHED_IDLE
           (they yield to any other process, nice 19 included); `--server-arg=--long-workers
           --server-arg=0` runs them on the short lane instead, for comparison
  matmul   dense float32 torch.mm of T x d x d_ff and T x d x d, same threads, same run

FLOPs per group are counted by torch's FlopCounterMode in a separate pass (matmuls: 2 m n k;
elementwise work is not counted, so those groups show time only). Each figure is the median of
`--repeats` passes after `--warmup`. The document is corpus text (bench/corpus) tokenized by the
bundle's tokenizer and cut at T tokens (long_docs.document): real token ids, one document.

    python bench/long_profile.py --tokens 4096                # about a minute on 2 CPUs
    python bench/long_profile.py --tokens 4096,16384,65536    # the issue's sizes (quiet machine)
    python bench/long_profile.py --tokens 4096 --trace /tmp/tr # + chrome trace, top aten ops

On a shared machine run it with OMP_WAIT_POLICY=PASSIVE (recorded; aft-serve inherits it): idle
OpenMP threads otherwise spin at barriers while another process holds the other core, and one
parallel op can take ~12 ms instead of ~1 (bench/attention/run.py found the same).

Results: bench/results/long_profile.json (harness.results, with the machine's CPU) and a Markdown
table on stdout. Run on a quiet machine: the figures are only as good as its idleness.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import aft.decay as D
import torch
from aft.bundle import load_eager, load_scripted, load_tokenizer
from aft.encoder import AFTEncoder
from aft.modules import AFTDecay
from harness import ROOT, log
from harness.metrics import family, scrape
from harness.results import Results, machine, model
from harness.serve_process import DEFAULT_BINARY, ServeProcess
from long_docs import document
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(os.environ.get("AFT_BENCH_RESULTS", ROOT / "bench" / "results"))
FORWARD = family("aft_inference_duration_seconds") + "_sum"
SPAN = 256


class Groups:
    """`with groups("ffn"):` adds the block's wall time (and, when counting, its FLOPs) to the
    group, under a record_function of that name so that torch.profiler shows it too."""

    def __init__(self, counter: FlopCounterMode | None = None) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.flops: dict[str, int] = defaultdict(int)
        self.counter = counter

    @contextlib.contextmanager
    def __call__(self, name: str):
        f0 = self.counter.get_total_flops() if self.counter else 0
        with record_function(name):
            t0 = time.perf_counter()
            yield
            self.seconds[name] += time.perf_counter() - t0
        if self.counter:
            self.flops[name] += self.counter.get_total_flops() - f0


def decay_mixing(attn: AFTDecay, q, k, v, mask, g: Groups):
    """aft_decay's body (models/aft/decay.py) with each step in its group; decay_part is opened
    up into its edge product and its float64 log-sum-exp scans (the whole sequence at once)."""
    with g("decay: chunk layout"):
        ch = D._chunks(k, v, attn.rates(), mask, attn.chunk, True)
    with g("decay: exp weights"):
        m, x = D._weighted_values(ch)
        w = D._decay_matrices(ch, attn.causal)
    B, n, C, d = ch.kc.shape
    h, neg = ch.rates.shape[0], D.limits(ch.kc).neg
    with g("decay: edge sums (bmm)"):
        edges = torch.bmm(torch.stack([w[:, C - 1], w[:, 0]], 1), x)
        edges = edges.view(h, 2, B, n, 2, d // h).permute(1, 4, 2, 3, 0, 5).reshape(2, 2, B, n, d)
    with g("decay: carries (float64 logcumsumexp)"):
        s, sn, sd = D._edge_sums(ch.kc, ch.vc, ch.mc, ch.lam, m, edges[0, 0], edges[0, 1], C - 1)
        fwd = D._carry(s, sn, sd, ch.lam, C, neg, False)
        s, sn, sd = D._edge_sums(ch.kc, ch.vc, ch.mc, ch.lam, m, edges[1, 0], edges[1, 1], 0)
        bwd = D._carry(s, sn, sd, ch.lam, C, neg, True)
    with g("decay: intra-chunk bmm"):
        y = torch.bmm(w, x)
    with g("decay: carried terms (baddbmm)"):
        y = D._add_carried(y, ch, m, fwd, bwd, attn.causal)
    with g("decay: output (ratio, gate)"):
        return D._output(q, ch, y, fwd, bwd, attn.causal, True)


def eager_pass(net, ids, spans, g: Groups):
    """AFTEncoder.embed_spans (models/aft/encoder.py), group by group."""
    mask = torch.ones_like(ids) > 0
    with g("token embedding"):
        x = net.ln_embed(net.token_projection(net.token_embedding(ids)))
    for blk in net.blocks:  # pre-LayerNorm blocks (main refuses post-LayerNorm bundles)
        with g("layernorm"):
            a = blk.ln1(x)
        with g("q/k/v projections"):
            q, k, v = blk.attn.qkv(a)
        y = decay_mixing(blk.attn, q, k, v, mask, g)
        with g("output projection"):
            y = blk.attn.out(y)
        x = x + y
        with g("layernorm"):
            f = blk.ln2(x)
        with g("ffn"):
            y = blk.ff(f)
        x = x + y
    with g("layernorm"):
        x = net.ln_f(x)
    with g("pooling (mean, projection, head)"):
        emb, _ = net._outputs(x, mask)
    with g("span pooling"):
        pooled = net.proj(torch.stack([x[0, s:e].mean(0) for _, s, e in spans.tolist()]))
    return emb, pooled


def bmm_(_, a, b, *args, **kwargs) -> int:
    """FLOPs of aten.baddbmm_ (in place: the carried terms), missing from torch's table."""
    return 2 * a[0] * a[1] * a[2] * b[2]


def timed(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def matmul_rates(T: int, d: int, dff: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of dense float32 matmuls of the pass's shape classes, median of `repeats`."""
    out = {}
    for name, n in ((f"mm T x {d} x {dff}", dff), (f"mm T x {d} x {d}", d)):
        a, b = torch.randn(T, d), torch.randn(d, n)
        s = statistics.median(timed(lambda a=a, b=b: torch.mm(a, b), 2, max(repeats, 5)))
        out[name] = 2 * T * d * n / s / 1e9
    return out


def service(bundle: Path, texts: dict[int, str], a) -> dict:
    """Per T: the request's wall seconds and its forward pass seconds (server metric)."""
    args = ["--model-dir", str(bundle), "--log-level", "warn", "--intra-op-threads", str(a.threads)]
    args += (["--precision", a.precision] if a.precision else []) + a.server_arg
    args += ["--request-timeout", "1800s", "--max-body-bytes", str(64 * 2**20)]
    out = {}
    with ServeProcess(args=args, ready_timeout=600) as srv:
        url = srv.url + "/v1/embed"
        for T, text in texts.items():
            body = json.dumps(
                {"inputs": [text], "truncate": False, "chunking": {"tokens": SPAN, "overlap": 0}}
            ).encode()
            wall, fwd = [], []
            for i in range(a.warmup + a.repeats):
                before = scrape(srv.url)[FORWARD]
                t0 = time.perf_counter()
                req = urllib.request.Request(url, body, {"content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=1800) as r:
                    r.read()
                if i >= a.warmup:
                    wall.append(time.perf_counter() - t0)
                    fwd.append(scrape(srv.url)[FORWARD] - before)
            out[T] = {"wall_s": statistics.median(wall), "forward_s": statistics.median(fwd)}
    return out


def sliced(net: AFTEncoder, slice_tokens: int) -> torch.jit.ScriptModule:
    """net scripted with another slice_tokens (0: every input in one pass, whole)."""
    other = AFTEncoder(dataclasses.replace(net.config, slice_tokens=slice_tokens))
    other.load_state_dict(net.state_dict())
    return torch.jit.script(other.eval())


def profile_T(net, passes: dict, ids, spans, a) -> dict:
    """One length: the eager pass by group, the TorchScript passes (`passes`: model.pt, the
    whole sequence at once, other slice sizes), the matmul references."""
    T = ids.shape[1]
    with torch.inference_mode():
        counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.baddbmm_: bmm_})
        counted = Groups(counter)
        with counter:
            emb, pooled = eager_pass(net, ids, spans, counted)
        ref = passes["model.pt"].embed_spans(ids, torch.ones_like(ids), spans)
        torch.testing.assert_close((emb, pooled), (ref[0], ref[2]), rtol=1e-3, atol=1e-4)
        runs = []
        for i in range(a.warmup + a.repeats):
            g = Groups()
            t0 = time.perf_counter()
            eager_pass(net, ids, spans, g)
            g.seconds["other"] = time.perf_counter() - t0 - sum(g.seconds.values())
            runs += [g.seconds] if i >= a.warmup else []
        short, one = ids[:, :256], torch.tensor([[0, 0, 256]])
        mask = torch.ones_like(ids)
        script_s: dict[str, list[float]] = {name: [] for name in passes}
        for m in passes.values():
            for _ in range(3):  # TorchScript's profiling executor optimises after its first runs
                m.embed_spans(short, torch.ones_like(short), one)
            for _ in range(a.warmup):
                m.embed_spans(ids, mask, spans)
        for _ in range(a.repeats):  # alternating, so that drift hits all alike
            for name, m in passes.items():
                script_s[name] += timed(lambda m=m: m.embed_spans(ids, mask, spans), 0, 1)
        if a.trace:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                eager_pass(net, ids, spans, Groups())
            a.trace.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(a.trace / f"long_profile_{T}.json"))
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        cfg = net.config
        rates = matmul_rates(T, cfg.d_model, cfg.d_ff, a.repeats)
    groups = {
        k: {"seconds": statistics.median(r[k] for r in runs), "flops": counted.flops.get(k, 0)}
        for k in runs[0]
    }
    return {
        "groups": groups,
        "flops": sum(counted.flops.values()),
        "eager_s": statistics.median(sum(r.values()) for r in runs),
        "passes_s": {name: statistics.median(v) for name, v in script_s.items()},
        "matmul_gflops": rates,
    }


def gf(flops: float, seconds: float) -> str:
    return f"{flops / seconds / 1e9:.1f}" if flops else "–"


def gflop(flops: float) -> str:
    return f"{flops / 1e9:.3g}" if flops else "–"


def markdown(res: dict) -> str:
    m, plan = res["run"]["machine"], res["plan"]
    out = [
        f"{m['cpu']}, {plan['threads']} torch thread(s) (load average before "
        f"{m['loadavg_before'][0]:.1f}); bundle `{res['run']['model']['name']}`, commit "
        f"{m['git_commit']}, {m['time']}; batch 1, {SPAN}-token spans, median of "
        f"{plan['repeats']} after {plan['warmup']} warm-up; service `--precision "
        f"{' '.join([plan['precision'] or '(its default)', *plan['server_arg']])}`; "
        f"OMP_WAIT_POLICY {plan['omp_wait_policy']}; "
        f"model.pt slice_tokens {plan['slice_tokens']}:",
        "",
    ]
    for T, r in res["tokens"].items():
        (big, rate_big), (small, rate_small) = r["matmul_gflops"].items()
        out += [
            f"**{int(T):,} tokens**, eager, by group; CPU: {m['cpu']}. The reference: {big} "
            f"({rate_big:.1f} GFLOP/s), for the projections {small} ({rate_small:.1f} GFLOP/s)",
            "",
            "| group | ms | share | GFLOP | GFLOP/s | of the reference |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, v in sorted(r["groups"].items(), key=lambda kv: -kv[1]["seconds"]):
            s, f = v["seconds"], v["flops"]
            ref = rate_small if "projection" in name else rate_big
            of = f"{f / s / 1e9 / ref:.0%}" if f else "–"
            share = s / r["eager_s"]
            out.append(
                f"| {name} | {s * 1e3:,.1f} | {share:.1%} | {gflop(f)} | {gf(f, s)} | {of} |"
            )
        out += ["", ""]
    out += [
        f"Whole pass (CPU: {m['cpu']})",
        "",
        "| tokens | GFLOP | eager, whole sequence ms (GFLOP/s) | TorchScript whole sequence ms "
        "(GFLOP/s) | TorchScript model.pt ms (GFLOP/s) | service forward ms (GFLOP/s) | service "
        "request ms | " + "".join(f"{k} GFLOP/s | " for k in r["matmul_gflops"]).rstrip(),
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(r["matmul_gflops"]),
    ]
    for T, r in res["tokens"].items():
        f, svc = r["flops"], r.get("service") or {}
        cells = [f"{int(T):,}", gflop(f)]
        passes = r["passes_s"]
        for s in (r["eager_s"], passes["slices of 0"], passes["model.pt"], svc.get("forward_s")):
            cells.append(f"{s * 1e3:,.0f} ({gf(f, s)})" if s else "–")
        cells.append(f"{svc['wall_s'] * 1e3:,.0f}" if svc else "–")
        cells += [f"{v:.1f}" for v in r["matmul_gflops"].values()]
        out.append("| " + " | ".join(cells) + " |")
    names = list(next(iter(res["tokens"].values()))["passes_s"])
    if len(names) > 2:  # --slice-tokens: TorchScript at each slice size, same runs
        out += ["", f"TorchScript in process by slice_tokens, ms (CPU: {m['cpu']})", ""]
        out += ["| tokens | " + " | ".join(names) + " |", "| ---: |" + " ---: |" * len(names)]
        for T, r in res["tokens"].items():
            cells = [f"{r['passes_s'][n] * 1e3:,.0f}" for n in names]
            out.append(f"| {int(T):,} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, default=ROOT / "models" / "aft-mini")
    p.add_argument("--tokens", default="4096,16384,65536", help="comma-separated lengths")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-service", action="store_true", help="skip the aft-serve measurement")
    p.add_argument("--precision", help="aft-serve's --precision (default float where it has one)")
    p.add_argument("--server-arg", action="append", default=[], help="extra aft-serve flag")
    p.add_argument("--trace", type=Path, help="also write a chrome trace per length here")
    p.add_argument(
        "--slice-tokens", default="", help="also TorchScript at these slice_tokens (1024,4096)"
    )
    p.add_argument("--results", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    sizes = [int(t) for t in a.tokens.split(",")]
    facts = {"machine": machine(), "model": model(a.bundle)}
    net = load_eager(a.bundle)
    passes = {"model.pt": load_scripted(a.bundle), "slices of 0": sliced(net, 0)}
    for n in (int(x) for x in a.slice_tokens.split(",") if x):
        passes[f"slices of {n}"] = sliced(net, n)
    if not isinstance(net.blocks[0].attn, AFTDecay) or net.blocks[0].post_norm:
        p.error(f"{a.bundle} is not a pre-LayerNorm AFT-decay bundle")
    tok = load_tokenizer(a.bundle)
    tok.no_truncation()
    texts = {T: document(a.bundle, T) for T in sizes}
    if not a.no_service and a.precision is None:  # like with like: model.pt, as in process
        usage = subprocess.run([DEFAULT_BINARY, "--help"], capture_output=True, text=True).stdout
        a.precision = "float" if "--precision" in usage else None  # older builds: model.pt only
    plan = {k: getattr(a, k) for k in ("threads", "warmup", "repeats", "precision", "server_arg")}
    plan["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    plan["slice_tokens"] = net.config.slice_tokens
    res = {"plan": plan | {"tokens": sizes}, "tokens": {}}
    for T in sizes:
        ids = torch.tensor([tok.encode(texts[T]).ids])
        spans = torch.tensor([[0, s, min(s + SPAN, T)] for s in range(0, T, SPAN)])
        log(f"{T:,} tokens ({ids.shape[1]:,} after tokenization): eager, TorchScript, matmul")
        res["tokens"][str(T)] = profile_T(net, passes, ids, spans, a)
    if not a.no_service:
        log("the same documents through aft-serve")
        for T, r in service(a.bundle, texts, a).items():
            res["tokens"][str(T)]["service"] = r
    res["loadavg_after"] = os.getloadavg()
    Results(a.results).write("long_profile", res, facts)
    print(markdown(res | {"run": facts}))
    return res


if __name__ == "__main__":
    main()
