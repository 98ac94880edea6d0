"""Model FLOPs per token for a bundle, two ways, printed as JSON:

- counted: torch.utils.flop_counter (matmuls, convolutions, attention-like bmm) over the corpus
  texts run one at a time at their own length, divided by their tokens;
- formula: from manifest["model"] hyper-parameters (see docs/BENCHMARKS.md, "Model FLOPs").

Usage: .venv/bin/python bench/flops.py MODEL_DIR CORPUS_JSONL
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from aft.bundle import load_manifest, load_scripted, load_tokenizer
from torch.utils.flop_counter import FlopCounterMode


def formula_per_seq(cfg: dict, T: int) -> dict[str, float]:
    """Matmul FLOPs (2 x multiply-adds) of one sequence of T tokens through the AFTEncoder of
    models/aft/encoder.py, from manifest["model"]:

      token projection      2 T e d            (factorised embedding, e = token_embedding_dim)
      per layer, L layers:
        Q, K, V, out        4 x 2 T d^2
        feed-forward        2 x 2 T d d_ff
        position bias       2 T^2 r            (u[:T] @ v[:T]^T, full/local, r = bias_rank)
        token mixing        2 x 2 T^2 d        (full, or local when window >= T: exp(w) @ ...)
                            0 matmul FLOPs     (local with window < T: banded elementwise
                                                work, about 8 d (2 window - 1) per token)
      output projection     2 d D              (when D != d), head 2 D C
    """
    d, L, dff = cfg["d_model"], cfg["n_layers"], cfg["d_ff"]
    e = cfg.get("token_embedding_dim")
    D = cfg.get("embedding_dim") or d
    C = cfg.get("num_labels") or 0
    variant = cfg.get("variant", "full")
    r = cfg.get("bias_rank") or 0
    window = cfg.get("window") or 0
    t = {"embedding_projection": 2 * T * e * d if e else 0}
    t["qkvo"] = L * 4 * 2 * T * d * d
    t["ffn"] = L * 2 * 2 * T * d * dff
    t["position_bias"] = L * 2 * T * T * r if variant in ("full", "local") else 0
    dense_mix = variant == "full" or (variant == "local" and window >= T)
    t["token_mixing"] = L * 2 * 2 * T * T * d if dense_mix else 0
    t["band_elementwise"] = (
        L * 8 * T * d * (2 * window - 1) if variant == "local" and not dense_mix else 0
    )
    t["output"] = (2 * d * D if D != d else 0) + 2 * D * C
    return t


def formula(cfg: dict, lengths: list[int]) -> dict | None:
    try:
        per = [formula_per_seq(cfg, T) for T in lengths]
    except (KeyError, TypeError):
        return None
    terms = {k: sum(p[k] for p in per) / sum(lengths) for k in per[0]}
    matmul = sum(v for k, v in terms.items() if k != "band_elementwise")
    return {
        "per_token_matmul": matmul,
        "terms_per_token": terms,
        "note": "band_elementwise is not in per_token_matmul",
    }


def main() -> None:
    model_dir, corpus = Path(sys.argv[1]), Path(sys.argv[2])
    manifest = load_manifest(model_dir)
    model = load_scripted(model_dir)
    tokenizer = load_tokenizer(model_dir, manifest)
    rows = [json.loads(line) for line in corpus.read_text().splitlines() if line.strip()]
    rows = rows[::25]  # a fixed 1-in-25 sample keeps the bucket mix
    seqs = [e.ids for e in tokenizer.encode_batch([r["text"] for r in rows])]
    total_flops, total_tokens = 0, 0
    by_bucket: dict[str, list[int]] = {}
    for r, s in zip(rows, seqs, strict=True):
        counter = FlopCounterMode(display=False)
        ids = torch.tensor([s], dtype=torch.long)
        with counter:
            model(ids, torch.ones_like(ids))
        f = counter.get_total_flops()
        total_flops += f
        total_tokens += len(s)
        acc = by_bucket.setdefault(r["bucket"], [0, 0])
        acc[0] += f
        acc[1] += len(s)
    mean_len = total_tokens / len(seqs)
    out = {
        "counted_per_token": total_flops / total_tokens,
        "counted_per_token_by_bucket": {b: f / t for b, (f, t) in by_bucket.items()},
        "sample_texts": len(seqs),
        "mean_len": mean_len,
        "params": sum(p.numel() for p in model.parameters()),
        "formula": formula(manifest.get("model", {}), [len(s) for s in seqs]),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
