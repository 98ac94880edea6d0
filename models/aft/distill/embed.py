"""Cache the teacher's sentence embeddings (float16) for held-out and training texts.

Writes under --out: the teacher's vector for every vocabulary token alone (token_table.npy),
then shards, so that training can start on whatever is ready: the held-out evaluation sample
first, then the training texts in a fixed random order, 2,048 per shard.
Run:  python -m aft.distill.embed --corpus ../.work/corpus --out ../.work/teacher
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from aft.distill.corpus import load
from aft.distill.teacher import Teacher, token_table

TRAIN_MAX_LEN = 128  # teacher and student both see at most 128 tokens in training
SHARD = 2048


def heldout_sample(corpus: Path, n: int, seed: int = 0) -> list[dict]:
    recs = load(corpus / "heldout.jsonl")
    random.Random(seed).shuffle(recs)
    return recs[:n]


def train_order(corpus: Path, seed: int = 0) -> list[dict]:
    recs = load(corpus / "train.jsonl")
    random.Random(seed).shuffle(recs)
    return recs


def write_shard(path: Path, recs: list[dict], emb: np.ndarray) -> None:
    np.save(path.with_suffix(".npy"), emb.astype(np.float16))
    with open(path.with_suffix(".jsonl"), "w") as fh:
        for r in recs:
            fh.write(json.dumps(r) + "\n")


def load_shards(folder: Path, prefix: str) -> tuple[list[dict], np.ndarray]:
    """All complete shards named prefix-*.npy (texts + float32 embeddings)."""
    recs, embs = [], []
    for npy in sorted(folder.glob(f"{prefix}-*.npy")):
        rows = load(npy.with_suffix(".jsonl"))
        e = np.load(npy)
        if len(rows) == len(e):
            recs += rows
            embs.append(e.astype(np.float32))
    return recs, (np.concatenate(embs) if embs else np.zeros((0, 384), np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("../.work/corpus"))
    ap.add_argument("--out", type=Path, default=Path("../.work/teacher"))
    ap.add_argument("--heldout", type=int, default=4096)
    ap.add_argument("--max-train", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    # The teacher's vector for each vocabulary token alone: the student's starting point.
    if not (args.out / "token_table.npy").exists():
        np.save(args.out / "token_table.npy", token_table().astype(np.float16))
        print("token table done", flush=True)

    # Held-out texts get the full 256-token teacher; they are only used for evaluation.
    held = heldout_sample(args.corpus, args.heldout)
    if not (args.out / "heldout-000.npy").exists():
        write_shard(
            args.out / "heldout-000",
            held,
            Teacher().encode(held_texts := [r["text"] for r in held]),
        )
        print(f"heldout: {len(held_texts)} texts", flush=True)

    teacher = Teacher(max_len=TRAIN_MAX_LEN)
    recs = train_order(args.corpus)[: args.max_train]
    t0 = time.time()
    for i, s in enumerate(range(0, len(recs), SHARD)):
        path = args.out / f"train-{i:03d}"
        if path.with_suffix(".npy").exists():
            continue
        chunk = recs[s : s + SHARD]
        write_shard(path, chunk, teacher.encode([r["text"] for r in chunk]))
        print(f"train shard {i}: {s + len(chunk)} texts, {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
