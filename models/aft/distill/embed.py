"""Cache the teacher's sentence embeddings (float16) for held-out and training texts.

Writes under --out: the teacher's vector for every vocabulary token alone (token_table.npy),
then shards, so that training can start on whatever is ready: the held-out evaluation sample
first, then the training texts in a fixed random order, 2,048 per shard.
Run:  python -m aft.distill.embed --corpus ../.work/corpus --out ../.work/teacher
Resumable: complete shards are kept and new ones continue the order, skipping cached texts;
`--max-words` prefers short texts for the new shards, `--minutes` caps the wall time.
Training shards are labelled with bfloat16 matrix products (twice the rate on CPUs with AMX or
AVX512-BF16, cosine >= 0.99995 to float32); the held-out sample is always float32.
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
    """Texts first, then the .npy (via a rename): an existing .npy marks a complete shard."""
    with open(path.with_suffix(".jsonl"), "w") as fh:
        for r in recs:
            fh.write(json.dumps(r) + "\n")
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb.astype(np.float16))
    tmp.rename(path.with_suffix(".npy"))


def load_shards(folder: Path, prefix: str) -> tuple[list[dict], np.ndarray]:
    """All complete shards named prefix-*.npy (texts + float32 embeddings)."""
    recs, embs = [], []
    for npy in sorted(folder.glob(f"{prefix}-[0-9][0-9][0-9].npy")):
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
    ap.add_argument(
        "--max-words",
        type=int,
        default=0,
        help="new shards: skip texts longer than this many words (0: no limit)",
    )
    ap.add_argument(
        "--float32",
        action="store_true",
        help="training shards in float32 (default: bfloat16 matrix products, see Teacher.encode)",
    )
    ap.add_argument(
        "--minutes", type=float, default=0.0, help="stop after the shard that passes this (wall)"
    )
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

    # Resume: complete shards are kept; new shards continue the fixed random order, skipping
    # texts already cached (and, with --max-words, long ones), until --max-train texts in all.
    teacher = Teacher(max_len=TRAIN_MAX_LEN)
    cached, _ = load_shards(args.out, "train")
    done = {r["text"] for r in cached}
    i = len(sorted(args.out.glob("train-[0-9][0-9][0-9].npy")))
    todo = [
        r
        for r in train_order(args.corpus)
        if r["text"] not in done
        and (not args.max_words or len(r["text"].split()) <= args.max_words)
    ][: max(0, args.max_train - len(cached))]
    print(f"cached {len(cached)} texts in {i} shards; {len(todo)} to do", flush=True)
    t0, n = time.time(), len(cached)
    for s in range(0, len(todo), SHARD):
        if args.minutes and time.time() - t0 > args.minutes * 60:
            break
        chunk = todo[s : s + SHARD]
        write_shard(
            args.out / f"train-{i:03d}",
            chunk,
            teacher.encode([r["text"] for r in chunk], bf16=not args.float32),
        )
        n += len(chunk)
        print(f"train shard {i}: {n} texts, {time.time() - t0:.0f}s", flush=True)
        i += 1


if __name__ == "__main__":
    main()
