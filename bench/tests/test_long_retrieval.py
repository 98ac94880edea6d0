"""bench/long_retrieval.py: its documents, chunk windows and relevance rule, and a --quick run end
to end (tiny AFT-decay fixture, the real teacher, the real aft-serve) on a small corpus written
here, so the test needs neither the built corpus nor the network.

    python -m pytest -q bench/tests
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

from aft.fixtures import minilm_tokenizer
from harness.sectioned import (
    Chunk,
    Document,
    Section,
    assemble,
    chunk_spans,
    documents,
    read_pools,
    relevant,
)
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]


def words_doc(n: int) -> Document:
    """`[CLS] w0 .. w(n-1) [SEP]`, word i at characters [2i, 2i + 1): the Rust tests' document
    (src/service/chunking.rs)."""
    return Document(
        source="wordnet",
        text=" ".join("w" * n),
        ids=[1] * (n + 2),
        offsets=[(0, 0), *((2 * i, 2 * i + 1) for i in range(n)), (0, 0)],
        special=[True, *([False] * n), True],
        sections=[],
    )


def ranges(chunks: list[Chunk]) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in chunks]


def test_chunk_windows_are_the_services():
    # The same cases as the service's own chunking tests.
    spans = chunk_spans(words_doc(10), 4, 1)
    assert ranges(spans) == [(1, 5), (4, 8), (7, 11)]
    assert spans[0].chars == (0, 7) and spans[2].chars == (12, 19)
    assert ranges(chunk_spans(words_doc(3), 256, 32)) == [(1, 4)]
    assert chunk_spans(words_doc(0), 256, 32) == []
    assert ranges(chunk_spans(words_doc(5), 2, 0)) == [(1, 3), (3, 5), (5, 6)]


def test_a_section_in_the_overlap_has_two_right_chunks_and_a_straddling_one_every_part():
    chunks = chunk_spans(words_doc(10), 4, 1)  # tokens 1-4, 4-7, 7-10
    assert relevant(chunks, (4, 5)) == ([0, 1], False)
    assert relevant(chunks, (2, 4)) == ([0], False)
    assert relevant(chunks, (3, 7)) == ([0, 1], True)


def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(minilm_tokenizer()))
    tok.no_truncation()
    tok.no_padding()
    return tok


def test_each_section_maps_to_exactly_its_own_tokens():
    tok = tokenizer()
    sections = [Section(t, None) for t in ("a cat sat", "on the mat, twice.", "Déjà vu 😀 again")]
    doc = assemble(tok, "debian", sections, 64)
    assert doc.text == "a cat sat\n\non the mat, twice.\n\nDéjà vu 😀 again"
    for (s, e), section in zip(doc.sections, sections, strict=True):
        assert doc.text[doc.offsets[s][0] : doc.offsets[e - 1][1]] == section.text
    assert doc.sections[0][0] == 1 and doc.sections[-1][1] == doc.tokens - 1


WORDS = (
    "river stone copper lantern meadow harbor violin saddle orchard falcon glacier pepper "
    "thimble canyon marble ladder beacon walnut quiver tundra anchor ribbon satchel cobalt"
).split()
VERBS = "carry polish measure gather weave follow repair sketch guard signal".split()


def write_corpus(path: Path, synsets: int = 500, packages: int = 400) -> dict[str, str]:
    """A held-out split of made-up WordNet and Debian records, in the corpus' format; returns
    each query's target section."""
    rows, target = [], {}
    for i in range(synsets):
        a, b, c = WORDS[i % 24], WORDS[(i * 7 + 3) % 24], VERBS[i % 10]
        doc = f"n:{i:08d}"
        gloss = f"a {a} that people {c} near the {b} (number {i})"
        rows.append({"text": gloss, "source": "wordnet", "doc": doc, "kind": "definition"})
        if i % 3 == 0:
            example = f"they {c} the {a} by the {b}, example {i}"
            rows.append({"text": example, "source": "wordnet", "doc": doc, "kind": "example"})
            target[example] = gloss
    for i in range(packages):
        a, b, c = WORDS[(i * 5) % 24], WORDS[(i * 11 + 1) % 24], VERBS[(i * 3) % 10]
        doc = f"deb:pkg{i // 3}"
        short = f"tool {i} to {c} {a} files"
        rows.append(
            {"text": short, "source": "debian-descriptions", "doc": doc, "kind": "debian-short"}
        )
        paragraphs = [
            f"This program can {c} every {a} and {b} record, part {p} of package {i}."
            for p in range(1 + i % 3)
        ]
        rows += [
            {"text": t, "source": "debian-descriptions", "doc": doc, "kind": "debian-long"}
            for t in paragraphs
        ]
        target[short] = "\n".join(paragraphs)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    return target


def test_documents_fill_their_size_share_no_section_and_target_their_queries(tmp_path):
    corpus = tmp_path / "heldout.jsonl.gz"
    target = write_corpus(corpus)
    pools = read_pools(corpus)
    assert len(pools["wordnet"]) == 500 and len(pools["debian"]) == 400
    docs = documents(tokenizer(), pools, 512, 2, 0, seed=0)
    assert [d.source for d in docs] == ["wordnet", "wordnet", "debian", "debian"]
    for d in docs:
        assert 400 < d.tokens <= 512
        assert d.queries
        for query, k in d.queries:
            s, e = d.sections[k]
            assert d.text[d.offsets[s][0] : d.offsets[e - 1][1]] == target[query]
            assert query not in d.text  # a query is never part of its document
    for i, d in enumerate(docs):  # no two documents share a section
        lines = set(d.text.split("\n")) - {""}
        assert not any(lines & set(o.text.split("\n")) for j, o in enumerate(docs) if j != i)
    assert docs == documents(tokenizer(), pools, 512, 2, 0, seed=0)  # seeded


def test_quick_run_measures_every_system_and_the_service_agrees_with_the_script(tmp_path):
    corpus = tmp_path / "heldout.jsonl.gz"
    write_corpus(corpus)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "long_retrieval.py"),
        "--quick",
        "--corpus",
        str(corpus),
        "--sizes",
        "512,2560",
        "--cost-sizes",
        "2560",
        "--json",
        str(out),
        "--markdown",
        str(md),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["retrieval"]) == {"512", "2560"}
    for size, per in res["retrieval"].items():
        assert res["data"][size]["queries"] > 0 and res["data"][size]["documents"] == 4
        assert set(per) == {"late", "aft-alone", "teacher-alone"}
        for r in per.values():
            for k in ("chunk_recall_at_1", "chunk_recall_at_10", "document_recall_at_1"):
                assert 0.0 <= r[k] <= 1.0
            assert r["chunk_recall_at_1"] <= r["chunk_recall_at_10"]
    cost = res["cost"]["2560"]
    for system in ("late", "teacher-alone", "aft-alone", "service"):
        assert cost[system]["seconds_median"] > 0 and cost[system]["peak_extra_bytes"] >= 0
    # The long document went through the real service's long lane, chunked exactly as the
    # script chunks it, with the vectors the script's in-process pass gives.
    assert cost["service"]["chunks_match"] is True
    assert cost["service"]["prompt_tokens"] == cost["document_tokens"] > 2048
    assert cost["service"]["min_cosine_to_in_process"] > 0.999
    report = md.read_text()
    assert "| 2,560 | (a) AFT, late chunking (one pass) |" in report
    assert "AFT one pass (aft-serve, one request)" in report
