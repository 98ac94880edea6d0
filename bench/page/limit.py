"""Section 1: the in-process limit (examples/forward_bench), matmul peak and model FLOPs."""

from __future__ import annotations

from page.fmt import f, pct, table
from page.run import Run

FORMULA = (
    "```\nper sequence = 2 T e d                      (factorised embedding)\n"
    "             + L [ 8 T d^2                   (Q, K, V, output projections)\n"
    "                 + 4 T d d_ff                (feed-forward)\n"
    "                 + 2 T^2 r                   (position bias u v^T, full/local)\n"
    "                 + 4 T^2 d if dense else 0 ] (AFT-full, or AFT-local when window >= T)\n"
    "             + 2 d D + 2 D C                 (output projection, head)\n```\n\n"
)


def section(run: Run) -> str:
    out = "## 1. The in-process limit\n\n"
    limit = run.limit
    if not limit:
        return out + "(not run)\n\n"
    out += (
        "`examples/forward_bench.rs` loads the bundle as the service does, tokenizes the corpus "
        "with the bundle's tokenizer, and forms batches as the service's batcher does at "
        "saturation: a queue of *depth* waiting inputs drawn in corpus order, the batch chosen "
        "by the batcher's rule (`select_batch`: oldest input plus the closest lengths, within "
        f"--max-batch-size {limit.get('max_batch_size')} and --max-batch-tokens, at most half "
        "padding), refilled as batches leave. Each worker thread owns a replica and sets its "
        "intra-op threads, as the service's workers do. Tokens/s counts real (unpadded) "
        "tokens.\n\n"
        f"Corpus: {f(limit['corpus_texts'])} texts, {f(limit['corpus_tokens'])} tokens "
        f"(mean {limit['corpus_tokens'] / limit['corpus_texts']:.1f}). "
        f"Each point runs {limit['seconds_per_point']} s after a warm-up.\n\n"
    )
    mm = limit.get("matmul", [])
    out += "### Machine matmul peak\n\n" + table(
        ["threads", "f32 matmul", "GFLOP/s"],
        [[m["threads"], f"{m['n']}x{m['n']}", f(m["gflops"])] for m in mm],
        run.cpu,
    )
    out += flops(limit.get("flops", {}))
    out += shapes(limit, run.cpu)
    for s in (limit.get("single_short_by_threads") or {"": limit.get("single_short")}).values():
        if s:
            out += (
                f"\nBare forward pass of one short sentence (batch 1, {s['threads']} thread(s), "
                f"the corpus' short texts, mean {s['mean_tokens']:.1f} tokens, {s['samples']} "
                f"samples): p50 **{s['forward_ms']['p50']:.3f} ms**, p90 "
                f"{s['forward_ms']['p90']:.3f} ms, p99 {s['forward_ms']['p99']:.3f} ms; with "
                f"tokenization p50 {s['tokenize_forward_ms']['p50']:.3f} ms.\n"
            )
    tps = limit.get("tokenization_texts_per_s_1thread")
    return out + f"\nTokenization alone: {f(tps, 0)} texts/s on one thread.\n\n"


def flops(fl: dict) -> str:
    out = "\n### Model FLOPs per token\n\n"
    fpt = fl.get("counted_per_token")
    if not fpt:
        return out + f"(not measured: {fl.get('error', 'no result')[-300:]})\n\n"
    formula = fl.get("formula") or {}
    out += (
        "Matmul FLOPs (2 x multiply-adds) per real token, from the manifest's "
        "hyper-parameters (d = d_model, L = n_layers, r = bias_rank, e = "
        "token_embedding_dim, T = sequence length):\n\n"
        + FORMULA
        + "AFT-local with window < T mixes tokens with banded elementwise work (about "
        "8 d (2 window - 1) FLOPs per token per layer), not matmuls; it is listed but not "
        f"counted below. Averaged over the corpus (a fixed sample of {fl.get('sample_texts')} "
        f"texts at their own length): **{fpt / 1e6:.2f} MFLOP per token** by torch's FLOP "
        "counter on the TorchScript module; the formula gives "
        f"{formula.get('per_token_matmul', 0) / 1e6:.2f} MFLOP. "
        f"Parameters: {fl.get('params', 0) / 1e6:.2f} M.\n\n"
    )
    terms = formula.get("terms_per_token", {})
    if terms:
        out += table(["term", "FLOPs per token"], [[k, f(float(v), 0)] for k, v in terms.items()])
    return out + "\n"


def shapes(limit: dict, cpu: str) -> str:
    peak = max((m["gflops"] for m in limit.get("matmul", [])), default=None)
    fpt = limit.get("flops", {}).get("counted_per_token")
    rows = []
    for r in limit.get("service_shapes", []):
        gf = (fpt or 0) * r["tokens_per_s"] / 1e9
        rows.append(
            [
                r["queue_depth"],
                r["workers"],
                r["intra_op_threads"],
                r["max_batch_tokens"],
                f(r["sentences_per_s"]),
                f(r["tokens_per_s"], 0),
                f(r["mean_batch_size"]),
                pct(r["padding_fraction"]),
                f(gf, 2) if fpt else "–",
                pct(gf / peak) if peak and fpt else "–",
            ]
        )
    header = ["queue depth", "workers", "intra-op threads", "max batch tokens", "sentences/s"]
    header += ["tokens/s", "mean batch", "padding", "model GFLOP/s", "of matmul peak"]
    out = "### Throughput at the service's batch shapes\n\n" + table(header, rows, cpu)
    sweep = limit.get("batch_size_sweep", [])
    if sweep:
        out += "\nFixed first-come batches (context; first config):\n\n" + table(
            ["batch size", "sentences/s", "tokens/s", "padding"],
            [
                [
                    r["batch_size"],
                    f(r["sentences_per_s"]),
                    f(r["tokens_per_s"], 0),
                    pct(r["padding_fraction"]),
                ]
                for r in sweep
            ],
            cpu,
        )
    return out
