"""Long documents made of many sections, and queries that each target one section, built from
the held-out split of the distillation corpus (models/aft/distill/corpus.py), for
bench/long_retrieval.py. Also the service's late-chunking windows, reproduced token for token.

Sources (each document is made of one source's sections, in the corpus' order):
  wordnet   one section = one synset's gloss (kind "definition"), one per line, synsets in
            WordNet's order (so neighbouring sections share a topic); query = the synset's first
            example sentence (kind "example"), for the synsets that have one
  debian    one section = one binary package's long description (its "debian-long" paragraphs,
            one per line), packages separated by a blank line, in the corpus' order (families of
            related packages side by side); query = the package's short description
            ("debian-short"), which is never part of the document

Only the held-out split is read: the model under test is distilled on the train split.
"""

from __future__ import annotations

import bisect
import gzip
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from harness import ROOT

HELDOUT = ROOT / ".work" / "corpus" / "heldout.jsonl.gz"
BUILD_HINT = "build it: (cd models && python -m aft.distill.corpus build --fetch)"
SOURCES = ("wordnet", "debian")
# How each source joins its sections into a document.
SEPARATORS = {"wordnet": "\n", "debian": "\n\n"}


@dataclass(frozen=True)
class Section:
    text: str
    query: str | None  # the text that targets this section, if there is one


@dataclass
class Document:
    source: str
    text: str
    ids: list[int]  # the whole document's tokens, [CLS] and [SEP] included
    offsets: list[tuple[int, int]]  # per token, characters [start, end) of `text`
    special: list[bool]
    sections: list[tuple[int, int]]  # token span [start, end) of each section
    queries: list[tuple[str, int]] = field(default_factory=list)  # (query, section index)

    @property
    def tokens(self) -> int:
        return len(self.ids)


class CorpusMissing(SystemExit):
    pass


def read_pools(path: Path = HELDOUT) -> dict[str, list[Section]]:
    """The sections of each source, in the corpus' order, from the held-out split file."""
    if not Path(path).exists():
        raise CorpusMissing(f"{path} does not exist; {BUILD_HINT}")
    wordnet: dict[str, dict] = {}
    debian: list[dict] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r["source"] == "wordnet":
                syn = wordnet.setdefault(r["doc"], {"gloss": None, "examples": []})
                if r["kind"] == "definition":
                    syn["gloss"] = r["text"]
                elif r["kind"] == "example":
                    syn["examples"].append(r["text"])
            elif r["source"] == "debian-descriptions":
                if r["kind"] == "debian-short":
                    debian.append({"doc": r["doc"], "short": r["text"], "long": []})
                elif r["kind"] == "debian-long" and debian and debian[-1]["doc"] == r["doc"]:
                    # A paragraph belongs to the package whose short description precedes it.
                    debian[-1]["long"].append(r["text"])
    pools = {
        "wordnet": [
            Section(s["gloss"], s["examples"][0] if s["examples"] else None)
            for s in wordnet.values()
            if s["gloss"]
        ],
        "debian": [Section("\n".join(p["long"]), p["short"]) for p in debian if p["long"]],
    }
    return pools


def text_tokens(tok: Tokenizer, texts: list[str]) -> list[int]:
    """Tokens of each text without special tokens (the tokenizer must not truncate)."""
    return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]


def documents(
    tok: Tokenizer,
    pools: dict[str, list[Section]],
    size: int,
    per_source: int,
    queries_per_doc: int,
    seed: int,
) -> list[Document]:
    """`per_source` documents of each source, each of at most `size` tokens (special tokens
    included) and as close to it as whole sections allow, made of consecutive sections. A
    source's documents start at evenly spaced points of its pool (from a seeded offset), or one
    right after the other when spacing them leaves too little; no two documents of one size
    share a section. At most `queries_per_doc` queries per document (a seeded sample; 0 = all)."""
    rng = random.Random(f"{seed}:{size}")
    out = []
    for source in SOURCES:
        pool = pools[source]
        counts = text_tokens(tok, [s.text for s in pool])
        offset = rng.randrange(len(pool))
        runs = _runs(counts, offset, size, per_source, len(pool) // per_source)
        runs = runs or _runs(counts, offset, size, per_source, 0)
        if runs is None:
            raise SystemExit(
                f"{source}: {len(pool)} held-out sections are too few for {per_source} "
                f"documents of {size} tokens; ask for fewer documents at this size"
            )
        for start, n in runs:
            picked = [pool[(start + k) % len(pool)] for k in range(n)]
            doc = assemble(tok, source, picked, size)
            with_query = [k for k, s in enumerate(picked) if s.query]
            if queries_per_doc and len(with_query) > queries_per_doc:
                with_query = sorted(rng.sample(with_query, queries_per_doc))
            doc.queries = [(picked[k].query or "", k) for k in with_query]
            out.append(doc)
    return out


def _runs(
    counts: list[int], offset: int, size: int, n_docs: int, spacing: int
) -> list[tuple[int, int]] | None:
    """(first section, sections) of each document: document i starts at offset + i * spacing,
    or where document i - 1 stopped if that is later, and takes sections while `size` tokens
    allow; None if the pool (once round from offset) runs out first."""
    total, runs, end = len(counts), [], offset
    for i in range(n_docs):
        start = max(offset + i * spacing, end)
        n, have = 0, 2
        while start + n < offset + total and have + counts[(start + n) % total] <= size:
            have += counts[(start + n) % total]
            n += 1
        end = start + n
        if end >= offset + total or n == 0:
            return None
        runs.append((start, n))
    return runs


def assemble(tok: Tokenizer, source: str, sections: list[Section], size: int) -> Document:
    """The document text of `sections` and where each section's tokens lie in it."""
    sep = SEPARATORS[source]
    text, chars = "", []
    for s in sections:
        if text:
            text += sep
        chars.append((len(text), len(text) + len(s.text)))
        text += s.text
    enc = tok.encode(text)
    if len(enc.ids) > size:  # joined text tokenizes like its parts; checked, not assumed
        raise AssertionError(f"{source} document of {len(enc.ids)} tokens > {size}")
    special = [bool(m) for m in enc.special_tokens_mask]
    starts = [o[0] if not special[i] else -1 for i, o in enumerate(enc.offsets)]
    ends = [o[1] if not special[i] else -1 for i, o in enumerate(enc.offsets)]
    spans = []
    for cs, ce in chars:
        # First token starting at or after the section's first character; one past the last
        # token ending at or before its last ([CLS] and [SEP] left out of the search).
        first = bisect.bisect_left(starts, cs, lo=1, hi=len(starts) - 1)
        last = bisect.bisect_right(ends, ce, lo=1, hi=len(ends) - 1)
        if first >= last:
            raise AssertionError(f"section at characters {cs}-{ce} has no token")
        spans.append((first, last))
    return Document(
        source=source,
        text=text,
        ids=list(enc.ids),
        offsets=[tuple(o) for o in enc.offsets],
        special=special,
        sections=spans,
    )


@dataclass(frozen=True)
class Chunk:
    start: int  # token positions [start, end) in the document's sequence
    end: int
    chars: tuple[int, int]  # characters [start, end) of the document's text


def chunk_spans(doc: Document, tokens: int, overlap: int) -> list[Chunk]:
    """The service's late-chunking windows (src/service/chunking.rs, `chunk_spans`): windows of
    `tokens` text tokens (special tokens belong to none), each starting `tokens - overlap` after
    the one before, until one reaches the last text token."""
    content = [i for i, s in enumerate(doc.special) if not s]
    step = max(tokens - overlap, 1)
    out, first = [], 0
    while first < len(content):
        last = min(first + tokens, len(content)) - 1
        a, b = content[first], content[last]
        out.append(Chunk(a, b + 1, (doc.offsets[a][0], doc.offsets[b][1])))
        if last + 1 >= len(content):
            break
        first += step
    return out


def relevant(chunks: list[Chunk], section: tuple[int, int]) -> tuple[list[int], bool]:
    """The chunks that count as right for a query on `section`: every chunk that holds the whole
    section; when none does (the section straddles a boundary wider than the overlap), every
    chunk that holds part of it. Also whether it straddled."""
    s, e = section
    whole = [k for k, c in enumerate(chunks) if c.start <= s and e <= c.end]
    if whole:
        return whole, False
    return [k for k, c in enumerate(chunks) if c.start < e and s < c.end], True
