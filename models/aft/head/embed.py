"""Tokenize texts as the service does and run them through the encoder in length-sorted,
token-budgeted batches (little padding, bounded memory)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer

from aft.encoder import AFTEncoder
from aft.head.progress import Progress


def load_tokenizer(bundle_dir: Path, max_len: int) -> Tokenizer:
    """The bundle's tokenizer, one text at a time, truncated at max_len (as the service)."""
    tok = Tokenizer.from_file(str(bundle_dir / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_len)
    return tok


def tokenize(tok: Tokenizer, texts: list[str]) -> tuple[list[list[int]], int]:
    """Token ids per text, and how many texts were truncated."""
    encs = tok.encode_batch(texts)
    return [e.ids for e in encs], sum(1 for e in encs if e.overflowing)


def length_batches(lengths: list[int], max_tokens: int, max_size: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of at most max_tokens padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        # Sorted ascending: this sequence is the longest so far, so it sets the padded width.
        if cur and ((len(cur) + 1) * lengths[i] > max_tokens or len(cur) >= max_size):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask, as the TorchScript contract wants."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask


def run_batched(
    model: AFTEncoder,
    seqs: list[list[int]],
    pad_id: int,
    pick: Callable[[tuple[torch.Tensor, torch.Tensor]], torch.Tensor],
    *,
    max_tokens: int = 8192,
    max_size: int = 256,
    progress: Progress | None = None,
) -> torch.Tensor:
    """pick(model(ids, mask)) for every sequence, rows in input order."""
    out: torch.Tensor | None = None
    model.eval()
    with torch.inference_mode():
        for batch in length_batches([len(s) for s in seqs], max_tokens, max_size):
            ids, mask = pad([seqs[i] for i in batch], pad_id)
            rows = pick(model(ids, mask)).float()
            if out is None:
                out = torch.empty((len(seqs), rows.shape[1]), dtype=torch.float32)
            out[torch.tensor(batch)] = rows
            if progress is not None:
                progress.update(len(batch))
    if out is None:
        raise ValueError("no sequences to run")
    return out


def embed(model: AFTEncoder, seqs: list[list[int]], pad_id: int, **kw) -> torch.Tensor:
    """Raw pooled embeddings (before L2 normalisation), what the classifier head sees."""
    return run_batched(model, seqs, pad_id, lambda out: out[0], **kw)


def logits(model: AFTEncoder, seqs: list[list[int]], pad_id: int, **kw) -> torch.Tensor:
    return run_batched(model, seqs, pad_id, lambda out: out[1], **kw)
