"""Long training documents made of teacher-labelled sections, at no new teacher cost.

A document is consecutive training texts of one source, in the order of their `doc` id (the
paragraphs of one manual page, then those of the next page in name order, ...), joined into one
token sequence of at most `max_tokens`: [CLS] section 1 ... section n [SEP], each section its own
tokens without [CLS]/[SEP]. The targets are the teacher's vectors of the sections, so a student
can be trained to do what late chunking asks of it (a section pooled from the whole-document pass
agrees with the teacher's embedding of the section alone) and what a one-pass document embedding
asks (the document's pooled vector agrees with the teacher's token-weighted mean of its
sections, the mean of chunk embeddings a chunking client would compute).

Those targets are each section *alone*: the best they teach is chunk-alone quality. With
`context=True` a batch also teaches what only the whole pass can give. In each document, one
text of every `doc` group that has several (a synset's gloss or its example, a package's short
or long description, a paragraph of a manual page) is left out of the document and becomes a
query; the document is cut into windows of a size drawn per batch (as the service's late
chunking cuts it), and the query's right window is the one holding most of its group's tokens.
The loss (train.py `context_loss`) ranks, for the teacher's vector of each query, its window
pooled from the whole pass above every other window of the batch, its own document's included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aft.distill.data import TrainSet


@dataclass
class DocumentBatch:
    input_ids: torch.Tensor  # (B, T) int64, right-padded
    attention_mask: torch.Tensor  # (B, T) int64
    section_of: torch.Tensor  # (B, T) int64: the section index of each token, -1 for none
    section_targets: torch.Tensor  # (S, 384) float32, L2-normalised teacher vectors
    doc_targets: torch.Tensor  # (B, 384) float32, L2-normalised token-weighted section means
    # With context=True (else empty): windows and the queries that target them.
    window_of: torch.Tensor  # (B, T) int64: the window index of each token, -1 for none
    query_targets: torch.Tensor  # (Q, 384) float32, L2-normalised teacher vectors of the queries
    query_window: torch.Tensor  # (Q,) int64: each query's right window
    section_rows: list[int]  # the training-set row of each section
    query_rows: list[int]  # ... and of each query

    @property
    def windows(self) -> int:
        """How many windows the batch has (windows are numbered 0 .. windows - 1)."""
        return int(self.window_of.max()) + 1 if self.window_of.numel() else 0


# Window sizes (text tokens) a context batch draws from: the service's default late chunk
# (256) and finer ones, so that no one size is all the model learns.
WINDOWS = (64, 128, 256)


class DocumentSampler:
    """Cuts the training set into documents once; `batch(step)` draws `docs_per_batch` of them,
    the same ones for the same (seed, step), so a resumed run sees the same batches."""

    def __init__(self, data: TrainSet, max_tokens: int, cls_id: int, sep_id: int, seed: int):
        if data.docs is None:
            raise ValueError("the training set has no doc ids")
        self.data, self.cls_id, self.sep_id, self.seed = data, cls_id, sep_id, seed
        # Consecutive sections: by source, then doc name, then cache order inside a doc.
        name_rank = np.empty(len(data.doc_names), dtype=np.int64)
        name_rank[np.argsort(np.asarray(data.doc_names))] = np.arange(len(data.doc_names))
        order = np.lexsort((np.arange(len(data)), name_rank[data.docs], data.sources))
        body = data.lengths[order] - 2  # without [CLS]/[SEP]
        self.documents: list[np.ndarray] = []
        start, tokens = 0, 0
        for j in range(len(order)):
            new_source = j > start and data.sources[order[j]] != data.sources[order[start]]
            if j > start and (tokens + body[j] > max_tokens - 2 or new_source):
                self.documents.append(order[start:j])
                start, tokens = j, 0
            tokens += max(int(body[j]), 0)
        if len(order) > start:
            self.documents.append(order[start:])
        # Only documents of several sections teach anything about context.
        self.documents = [d for d in self.documents if len(d) >= 4]
        if not self.documents:
            raise ValueError("no document of 4 or more sections: too few labelled texts")

    def __len__(self) -> int:
        return len(self.documents)

    def batch(self, step: int, docs_per_batch: int, context: bool = False) -> DocumentBatch:
        rng = np.random.default_rng([self.seed, step, 7])
        picks = rng.choice(len(self.documents), size=min(docs_per_batch, len(self)), replace=False)
        window = int(rng.choice(WINDOWS)) if context else 0
        rows, section_rows, doc_targets = [], [], []
        window_rows, query_rows, query_window, windows = [], [], [], 0
        for d in picks:
            members = [int(i) for i in self.documents[d] if len(self.data.ids(int(i))) > 2]
            queries = self._queries(members, rng) if context else set()
            ids, sec, group = [self.cls_id], [-1], [-1]
            weights = []
            for i in members:
                if i in queries:
                    continue
                body = self.data.ids(i)[1:-1]
                sec += [len(section_rows)] * len(body)
                group += [int(self.data.docs[i])] * len(body)
                ids += body.tolist()
                section_rows.append(i)
                weights.append(len(body))
            ids.append(self.sep_id)
            sec.append(-1)
            group.append(-1)
            rows.append((ids, sec))
            t = self._targets(section_rows[len(section_rows) - len(weights) :])
            w = torch.tensor(weights, dtype=torch.float32)[:, None]
            doc_targets.append(F.normalize((t * w).sum(0), dim=-1))
            if context:  # windows over the text tokens (positions 1 .. n - 2)
                win = np.full(len(ids), -1, dtype=np.int64)
                win[1:-1] = windows + np.arange(len(ids) - 2) // window
                in_doc = np.asarray(group)
                for q in queries:  # its window: the one holding most of its group's tokens
                    counts = np.bincount(win[in_doc == self.data.docs[q]] - windows)
                    query_rows.append(q)
                    query_window.append(windows + int(counts.argmax()))
                windows = int(win.max()) + 1
                window_rows.append(win)
        T = max(len(ids) for ids, _ in rows)
        input_ids = torch.zeros(len(rows), T, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        section_of = torch.full((len(rows), T), -1, dtype=torch.long)
        window_of = torch.full((len(rows), T), -1, dtype=torch.long)
        for b, (ids, sec) in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            mask[b, : len(ids)] = 1
            section_of[b, : len(sec)] = torch.tensor(sec)
            if context:
                window_of[b, : len(ids)] = torch.from_numpy(window_rows[b])
        return DocumentBatch(
            input_ids,
            mask,
            section_of,
            self._targets(section_rows),
            torch.stack(doc_targets),
            window_of,
            self._targets(query_rows),
            torch.tensor(query_window, dtype=torch.long),
            section_rows,
            query_rows,
        )

    def _queries(self, members: list[int], rng: np.random.Generator) -> set[int]:
        """One text of each doc group with several texts in the document (drawn with rng)."""
        groups: dict[int, list[int]] = {}
        for i in members:
            groups.setdefault(int(self.data.docs[i]), []).append(i)
        return {int(rng.choice(g)) for g in groups.values() if len(g) >= 2}

    def _targets(self, rows: list[int]) -> torch.Tensor:
        t = torch.from_numpy(self.data.targets[rows].astype(np.float32))
        return F.normalize(t, dim=-1)


def pool_sections(states: torch.Tensor, section_of: torch.Tensor, sections: int) -> torch.Tensor:
    """Mean of the token states (B, T, d) of each section (B, T) -> (sections, d): the pooling
    the service's late chunking applies to a chunk's span, here to each section's span."""
    d = states.shape[-1]
    keep = section_of.reshape(-1) >= 0
    idx = section_of.reshape(-1)[keep]
    sums = states.new_zeros(sections, d).index_add_(0, idx, states.reshape(-1, d)[keep])
    counts = torch.bincount(idx, minlength=sections).clamp_min(1).to(states.dtype)
    return sums / counts[:, None]
