"""The training monitor: Spearman of student vs teacher cosine over random pairs of held-out
texts, kept apart from every evaluation sample (`aft.distill.samples`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aft.encoder import AFTEncoder
from aft.head.embed import pad


@torch.no_grad()
def embed_raw(model: AFTEncoder, seqs: list[list[int]], batch_size: int = 128) -> torch.Tensor:
    """Raw pooled embeddings, in input order (length-sorted batches for speed)."""
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out = torch.zeros(len(seqs), model.config.out_dim)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        out[idx] = model(*pad([seqs[i] for i in idx], model.config.pad_token_id))[0]
    return out


def quick_spearman(model: AFTEncoder, seqs, teacher: np.ndarray, n_pairs: int = 20000) -> float:
    """Spearman of student vs teacher cosine over random held-out pairs (training monitor)."""
    from scipy.stats import spearmanr

    s = F.normalize(embed_raw(model, seqs), dim=-1).numpy()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(s), n_pairs), rng.integers(0, len(s), n_pairs)
    keep = a != b
    a, b = a[keep], b[keep]
    return float(spearmanr((s[a] * s[b]).sum(-1), (teacher[a] * teacher[b]).sum(-1)).statistic)


def monitor_set(args, tok) -> tuple[list[list[int]], np.ndarray]:
    """The monitor's texts as token ids, and their teacher embeddings."""
    from aft.distill.samples import load_samples

    recs, emb = load_samples(args.corpus, args.eval_cache)["monitor"]
    return [e.ids for e in tok.encode_batch([r["text"] for r in recs])], emb
