"""Fixed held-out samples with float32 teacher embeddings, cached under ../.work/eval-cache.

- `monitor`: 1,024 random held-out texts, the training-time monitor (early stopping);
- `per_source`: up to 300 held-out texts of each source, for the per-source table and the
  leave-one-source-out scores.

Both are disjoint from each other and from `aft.distill.embed`'s 4,096-text evaluation sample
(heldout-000), so choosing when to stop never looks at the texts the card's main table scores.
The teacher runs in float32 with its full 256 tokens, as for the evaluation sample.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from aft.distill.corpus import load
from aft.distill.embed import heldout_sample

CACHE = Path("../.work/eval-cache")
MONITOR = 1024
PER_SOURCE = 300


def _cached(path: Path, recs: list[dict]) -> tuple[list[dict], np.ndarray]:
    """recs with their float32 teacher embeddings, from path.{jsonl,npy} or computed once."""
    jsonl, npy = path.with_suffix(".jsonl"), path.with_suffix(".npy")
    if npy.exists() and jsonl.exists():
        cached = load(jsonl)
        if [r["text"] for r in cached] == [r["text"] for r in recs]:
            return cached, np.load(npy)
    from aft.distill.teacher import Teacher  # needs the teacher wheel: only when computing

    emb = Teacher().encode([r["text"] for r in recs])
    path.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.rename(npy)
    return recs, emb


def split_samples(
    heldout: list[dict], exclude: set[str], monitor: int, per_source: int, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """(monitor sample, per-source sample) from the held-out records not in `exclude` (texts);
    deterministic for the same inputs. Per-source records are grouped by source, sorted."""
    pool = [r for r in heldout if r["text"] not in exclude]
    random.Random(seed).shuffle(pool)
    mon, rest = pool[:monitor], pool[monitor:]
    by_source: dict[str, list[dict]] = {}
    for r in rest:
        group = by_source.setdefault(r["source"], [])
        if len(group) < per_source:
            group.append(r)
    return mon, [r for s in sorted(by_source) for r in by_source[s]]


def load_samples(
    corpus: Path, cache: Path = CACHE, eval_n: int = 4096
) -> dict[str, tuple[list[dict], np.ndarray]]:
    """{"monitor": (recs, emb), "per_source": (recs, emb)}, computed on first use."""
    heldout = load(corpus / "heldout.jsonl")
    exclude = {r["text"] for r in heldout_sample(corpus, eval_n)}
    mon, per = split_samples(heldout, exclude, MONITOR, PER_SOURCE)
    return {
        "monitor": _cached(cache / f"monitor-{MONITOR}", mon),
        "per_source": _cached(cache / f"per-source-{PER_SOURCE}", per),
    }


if __name__ == "__main__":
    import torch

    torch.set_num_threads(2)
    for name, (recs, _) in load_samples(Path("../.work/corpus")).items():
        print(f"{name}: {len(recs)} texts, {len({r['source'] for r in recs})} sources")
