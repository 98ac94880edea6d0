"""The conversion's texts: a training set (`aft.distill.data.TrainSet`) whose teacher labels are
computed when first needed and kept (`LabelCache`), and a held-out monitor sample.

Stage 2 runs the teacher on every training batch anyway (for its hidden states), so its sentence
vectors come free and are stored; a long-document batch asks the cache for the vectors of its
sections, which are computed then if no batch has labelled them yet. Nothing is labelled twice,
nothing ahead of need. The cache is saved with the checkpoint, keyed by each text's token ids,
so a resumed run (or one over a rebuilt corpus) reuses every label whose text is still there.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from aft.distill.data import TrainSet
from aft.distill.textclean import stable_fraction

# The monitor: held-out texts scored every --eval-steps (Spearman against the teacher).
MONITOR = 1024


def text_key(ids: np.ndarray) -> int:
    """A stable 63-bit key of a token sequence."""
    digest = hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int32).tobytes(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


class LabelCache:
    """float16 teacher vectors (n, dim) of a text set, indexed like a numpy array; rows not yet
    labelled are labelled on access by `label(rows) -> float32 (len(rows), dim)`."""

    def __init__(self, keys: np.ndarray, dim: int, label: Callable[[np.ndarray], np.ndarray]):
        self.keys = keys
        self.vectors = np.zeros((len(keys), dim), dtype=np.float16)
        self.have = np.zeros(len(keys), dtype=bool)
        self.label = label

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        missing = np.unique(rows[~self.have[rows]])
        if len(missing):
            self.put(missing, self.label(missing))
        return self.vectors[rows]

    def put(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        self.vectors[rows] = vectors
        self.have[rows] = True

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=self.keys[self.have], vectors=self.vectors[self.have])
        tmp.replace(path)

    def load(self, path: Path) -> int:
        """Take the labels saved at path whose texts are in this set; returns how many."""
        if not path.exists():
            return 0
        saved = np.load(path)
        index = {int(k): i for i, k in enumerate(saved["keys"])}
        mine = [(r, index[int(k)]) for r, k in enumerate(self.keys) if int(k) in index]
        if mine:
            rows, at = (np.asarray(x, dtype=np.int64) for x in zip(*mine, strict=True))
            self.vectors[rows] = saved["vectors"][at]
            self.have[rows] = True
        return len(mine)


def corpus_records(corpus: Path, max_texts: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training records: the first max_texts of the corpus's train split in a fixed random order;
    monitor records: held-out texts outside the evaluation samples of `aft.distill.samples`)."""
    from aft.distill.corpus import load
    from aft.distill.embed import heldout_sample
    from aft.distill.samples import split_samples

    train = load(corpus / "train.jsonl")
    random.Random(seed).shuffle(train)
    heldout = load(corpus / "heldout.jsonl")
    evaluation = {r["text"] for r in heldout_sample(corpus, 4096)}
    monitor, _ = split_samples(heldout, evaluation, MONITOR, 0)
    return train[: max_texts or None], monitor


def file_records(path: Path) -> tuple[list[dict], list[dict]]:
    """Texts of a file (one a line, or JSON Lines with "text" and optional "doc"/"source"): a
    stable 5% (at least 16) held out as the monitor."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        recs = [json.loads(line) for line in lines]
    else:
        recs = [{"text": line} for line in lines]
    for i, r in enumerate(recs):
        if not isinstance(r.get("text"), str) or not r["text"].strip():
            raise ValueError(f"{path}:{i + 1}: no text")
        r.setdefault("source", path.stem)
        r.setdefault("doc", f"{path.stem}:{i}")
    order = sorted(range(len(recs)), key=lambda i: stable_fraction(recs[i]["text"]))
    n_mon = max(16, len(recs) // 20)
    if len(recs) < 2 * n_mon:
        raise ValueError(f"{path}: {len(recs)} texts; need at least {2 * n_mon}")
    held = set(order[:n_mon])
    train = [r for i, r in enumerate(recs) if i not in held]
    return train, [recs[i] for i in sorted(held)]


def text_set(recs: list[dict], tok: Tokenizer, dim: int, label) -> TrainSet:
    """A TrainSet of the records' token ids whose targets are a LabelCache."""
    encs = tok.encode_batch([r["text"] for r in recs])
    lengths = np.array([len(e.ids) for e in encs], dtype=np.int64)
    offsets = np.zeros(len(recs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate([np.asarray(e.ids, dtype=np.int32) for e in encs])
    sources: dict[str, int] = {}
    docs: dict[str, int] = {}
    data = TrainSet(
        tokens,
        offsets,
        None,  # set below: the cache labels through this set's token ids
        np.array([sources.setdefault(r["source"], len(sources)) for r in recs], dtype=np.int16),
        list(sources),
        0,
        len(recs),
        np.array([docs.setdefault(r.get("doc", ""), len(docs)) for r in recs], dtype=np.int32),
        list(docs),
    )
    keys = np.array([text_key(data.ids(i)) for i in range(len(recs))], dtype=np.int64)
    data.targets = LabelCache(keys, dim, lambda rows: label([data.ids(int(i)) for i in rows]))
    return data


def teacher_labeller(teacher, pooling: str, bf16: bool, batch_size: int = 64):
    """label(list of token-id arrays) -> float32 (n, d) L2-normalised teacher sentence vectors."""
    from aft.convert.source import sentence_targets
    from aft.head.embed import pad

    def label(seqs: list[np.ndarray]) -> np.ndarray:
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        out = None
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            ids, mask = pad([seqs[i].tolist() for i in idx], 0)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                states, _ = teacher.trace(ids, mask)
            vec = sentence_targets(states, mask, pooling).numpy()
            if out is None:
                out = np.zeros((len(seqs), vec.shape[1]), dtype=np.float32)
            out[idx] = vec
        return out

    return label
