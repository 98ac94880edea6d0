"""The teacher-labelled training set in compact form, and its length-bucketed batch order.

A million texts as Python lists of token ids and float32 targets would take several GB; here
the token ids are one flat int32 array with offsets, the teacher's vectors stay float16 (as
`aft.distill.embed` stored them) and are converted per batch, and each text keeps only its
source's code. The batch order of an epoch is a pure function of (seed, epoch), so a resumed run
recomputes it and continues at the same position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer


@dataclass
class TrainSet:
    tokens: np.ndarray  # int32, all texts' token ids end to end
    offsets: np.ndarray  # int64, n + 1: text i is tokens[offsets[i]:offsets[i + 1]]
    targets: np.ndarray  # float16 (n, 384): the teacher's embeddings
    sources: np.ndarray  # int16 (n,): index into source_names
    source_names: list[str]
    shards: int  # complete shards read
    read: int  # texts read from them, excluded sources included
    docs: np.ndarray | None = None  # int32 (n,): index into doc_names (the record's "doc")
    doc_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def ids(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, L2-normalised float32 targets) for the rows idx."""
        seqs = [self.ids(int(i)) for i in idx]
        t = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), t), dtype=np.int64)
        mask = np.zeros((len(seqs), t), dtype=np.int64)
        for j, s in enumerate(seqs):
            ids[j, : len(s)] = s
            mask[j, : len(s)] = 1
        target = F.normalize(torch.from_numpy(self.targets[idx].astype(np.float32)), dim=-1)
        return torch.from_numpy(ids), torch.from_numpy(mask), target

    def select(self, keep: np.ndarray) -> TrainSet:
        """The rows where keep is True (order kept)."""
        rows = np.flatnonzero(keep)
        lengths = self.lengths[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.concatenate([self.ids(int(i)) for i in rows]) if len(rows) else self.tokens[:0]
        return TrainSet(
            tokens.astype(np.int32),
            offsets,
            self.targets[rows],
            self.sources[rows],
            self.source_names,
            self.shards,
            self.read,
            None if self.docs is None else self.docs[rows],
            self.doc_names,
        )

    def source_counts(self) -> dict[str, int]:
        counts = np.bincount(self.sources, minlength=len(self.source_names))
        return {name: int(c) for name, c in zip(self.source_names, counts, strict=True) if c}


def complete_shards(folder: Path, prefix: str = "train") -> list[Path]:
    """Shards whose .npy exists (written last, by rename) and matches its .jsonl row count."""
    return sorted(folder.glob(f"{prefix}-[0-9][0-9][0-9].npy"))


def load_train_set(
    folder: Path, tok: Tokenizer, max_texts: int = 0, exclude: frozenset[str] = frozenset()
) -> TrainSet:
    """The first `max_texts` (0: all) labelled texts of the complete shards, in cache order,
    without the sources in `exclude`."""
    names: dict[str, int] = {}
    doc_names: dict[str, int] = {}
    tokens, lengths, targets, sources, docs = [], [], [], [], []
    n, shards = 0, 0
    for npy in complete_shards(folder):
        emb = np.load(npy)
        rows = [json.loads(line) for line in npy.with_suffix(".jsonl").read_text().splitlines()]
        if len(rows) != len(emb):  # a shard being written: not complete yet
            continue
        shards += 1
        if max_texts:
            rows, emb = rows[: max_texts - n], emb[: max_texts - n]
        n += len(rows)
        keep = [i for i, r in enumerate(rows) if r["source"] not in exclude]
        encs = tok.encode_batch([rows[i]["text"] for i in keep])
        for e in encs:
            tokens.append(np.asarray(e.ids, dtype=np.int32))
            lengths.append(len(e.ids))
        targets.append(emb[keep].astype(np.float16))
        sources += [names.setdefault(rows[i]["source"], len(names)) for i in keep]
        docs += [doc_names.setdefault(rows[i].get("doc", ""), len(doc_names)) for i in keep]
        if max_texts and n >= max_texts:
            break
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return TrainSet(
        np.concatenate(tokens) if tokens else np.zeros(0, np.int32),
        offsets,
        np.concatenate(targets) if targets else np.zeros((0, 384), np.float16),
        np.asarray(sources, dtype=np.int16),
        list(names),
        shards,
        n,
        np.asarray(docs, dtype=np.int32),
        list(doc_names),
    )


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Length-bucketed batches (little padding) in random order; the same for the same
    (seed, epoch), so that a resumed run continues the same sequence."""
    rng = np.random.default_rng([seed, epoch])
    order = np.argsort(lengths + rng.random(len(lengths)), kind="stable")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
