"""Evaluate an aft-mini bundle against its teacher on held-out text only; print a table.

    python -m aft.distill.evaluate --bundle aft-mini

The student runs as the service runs it: model.pt through TorchScript, parameters cast to
float32. The held-out sample (synsets and Debian package families never trained on) and its
teacher embeddings come from `aft.distill.embed`'s cache, recomputed here if absent.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score
from tokenizers import Tokenizer

from aft.distill.corpus import load
from aft.distill.embed import heldout_sample, load_shards
from aft.distill.teacher import MiniLM, Teacher, batch_ids

GENSIM_DATA = "gensim/test/test_data"


def load_student(bundle: Path):
    model = torch.jit.load(str(bundle / "model.pt"), map_location="cpu").float().eval()
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    return model, tok, json.loads((bundle / "manifest.json").read_text())


@torch.no_grad()
def student_outputs(model, tok, texts: list[str], bs: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised embeddings, logits), in input order."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    embs, logits = [None] * len(texts), [None] * len(texts)
    for s in range(0, len(order), bs):
        idx = order[s : s + bs]
        e, lg = model(*batch_ids(tok, [texts[i] for i in idx]))
        e = F.normalize(e, dim=-1)
        for j, i in enumerate(idx):
            embs[i], logits[i] = e[j].numpy(), lg[j].numpy()
    return np.stack(embs), np.stack(logits)


def pair_metrics(s: np.ndarray, t: np.ndarray, n_pairs: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(s), 2 * n_pairs), rng.integers(0, len(s), 2 * n_pairs)
    keep = a != b
    a, b = a[keep][:n_pairs], b[keep][:n_pairs]
    rho = spearmanr((s[a] * s[b]).sum(-1), (t[a] * t[b]).sum(-1)).statistic
    # Pairs the teacher finds similar: every pair above 0.5 (upper triangle).
    tt = t @ t.T
    ia, ib = np.nonzero(np.triu(tt > 0.5, k=1))
    rho_sim = spearmanr((s[ia] * s[ib]).sum(-1), tt[ia, ib]).statistic
    return {"rho_random": rho, "n_random": len(a), "rho_similar": rho_sim, "n_similar": len(ia)}


def retrieval(s: np.ndarray, t: np.ndarray, n_queries: int = 1000) -> dict:
    n_queries = min(n_queries, len(t))
    """Is the teacher's nearest neighbour (among all other held-out texts) in the student's top-k?

    Every held-out text except the query is a candidate."""
    tt, ss = t[:n_queries] @ t.T, s[:n_queries] @ s.T
    q = np.arange(n_queries)
    tt[q, q] = ss[q, q] = -np.inf  # a text is not its own neighbour
    target = tt.argmax(1)
    rank = (ss > ss[q, target][:, None]).sum(1)  # candidates scored above the target
    return {"r1": (rank < 1).mean(), "r10": (rank < 10).mean(), "candidates": len(t) - 1}


def lee(student, tok, teacher: Teacher) -> dict:
    """Lee et al. (2005): 50 news documents, mean human similarity per pair (upper triangle)."""
    import gensim

    d = Path(gensim.__file__).parent / "test" / "test_data"
    docs = [line.strip() for line in (d / "lee.cor").read_text(encoding="latin-1").splitlines()]
    human = np.loadtxt(d / "similarities0-1.txt")
    iu = np.triu_indices(len(docs), k=1)
    out = {}
    for name, e in (
        ("student", student_outputs(student, tok, docs)[0]),
        ("teacher", teacher.encode(docs)),
    ):
        cos = (e @ e.T)[iu]
        out[name] = (pearsonr(cos, human[iu]).statistic, spearmanr(cos, human[iu]).statistic)
    return out


def classification(student, tok, manifest: dict, corpus: Path, max_n: int) -> dict:
    labels = manifest["labels"]
    train = [r["lexname"] for r in load(corpus / "train.jsonl") if r["kind"] == "definition"]
    held = [r for r in load(corpus / "heldout.jsonl") if r["kind"] == "definition"]
    # A random sample: the file is ordered noun, verb, adj, adv.
    held = [held[i] for i in np.random.default_rng(0).permutation(len(held))[:max_n]]
    y = np.array([labels.index(r["lexname"]) for r in held])
    pred = student_outputs(student, tok, [r["text"] for r in held])[1].argmax(1)
    majority = labels.index(max(set(train), key=train.count))
    return {
        "acc": (pred == y).mean(),
        "macro_f1": f1_score(y, pred, average="macro"),
        "majority_acc": (y == majority).mean(),
        "majority_label": labels[majority],
        "n": len(y),
        "n_labels": len(labels),
    }


@torch.no_grad()
def speed(student, eager, tok, teacher: MiniLM, texts: list[str], runs: int = 5) -> dict:
    """Sentences/s of each model's forward on identical padded batches of 32 (tokenized once).

    Runs alternate student / teacher so that load from other processes hits both alike; the
    ratio is the median of the per-run ratios."""
    batches = [batch_ids(tok, texts[i : i + 32]) for i in range(0, len(texts), 32)]
    models = {"student": student, "eager": eager, "teacher": teacher}
    for fn in models.values():  # warm-up: one pass, so TorchScript has profiled every shape
        for ids, mask in batches:
            fn(ids, mask)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(runs):
        for name, fn in models.items():
            t0 = time.perf_counter()
            for ids, mask in batches:
                fn(ids, mask)
            rates[name].append(len(texts) / (time.perf_counter() - t0))
    out = {name: statistics.median(r) for name, r in rates.items()}
    for k in ("student", "eager"):
        pairs = zip(rates[k], rates["teacher"], strict=True)
        out[f"ratio_{k}"] = statistics.median(s / t for s, t in pairs)
    out["runs"], out["texts"] = runs, len(texts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("aft-mini"))
    ap.add_argument("--corpus", type=Path, default=Path("../.work/corpus"))
    ap.add_argument("--teacher", type=Path, default=Path("../.work/teacher"))
    ap.add_argument("--heldout", type=int, default=4096, help="held-out texts used (max 4096)")
    ap.add_argument("--n-pairs", type=int, default=10000)
    ap.add_argument("--max-class", type=int, default=4000)
    ap.add_argument("--speed-texts", type=int, default=320)
    ap.add_argument("--speed-runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    student, tok, manifest = load_student(args.bundle)
    teacher = Teacher()
    held, t = load_shards(args.teacher, "heldout")
    if not held:
        held = heldout_sample(args.corpus, 4096)
        t = teacher.encode([r["text"] for r in held])
    held, t = held[: args.heldout], t[: args.heldout]
    texts = [r["text"] for r in held]
    s, _ = student_outputs(student, tok, texts)
    r = {"pairs": pair_metrics(s, t, args.n_pairs), "retrieval": retrieval(s, t)}
    r["lee"] = lee(student, tok, teacher)
    r["class"] = classification(student, tok, manifest, args.corpus, args.max_class)
    from aft.bundle import load_eager

    eager = load_eager(args.bundle)
    r["speed"] = speed(
        student, eager, tok, teacher.model, texts[: args.speed_texts], args.speed_runs
    )

    p, rt, c, sp = r["pairs"], r["retrieval"], r["class"], r["speed"]
    (sp_, ss_), (tp_, ts_) = r["lee"]["student"], r["lee"]["teacher"]
    rows = [
        ("Spearman vs teacher cos, random held-out pairs", f"{p['rho_random']:.3f}",
         f"n={p['n_random']}"),
        ("Spearman vs teacher cos, teacher-similar pairs (cos > 0.5)", f"{p['rho_similar']:.3f}",
         f"n={p['n_similar']}"),
        ("Teacher's nearest neighbour: recall@1", f"{rt['r1']:.3f}",
         f"1000 queries, {rt['candidates']} candidates"),
        ("Teacher's nearest neighbour: recall@10", f"{rt['r10']:.3f}", ""),
        ("Lee 50 docs vs humans, Pearson / Spearman, student", f"{sp_:.3f} / {ss_:.3f}",
         f"{sp_ / tp_:.0%} / {ss_ / ts_:.0%} of the teacher's"),
        ("Lee 50 docs vs humans, Pearson / Spearman, teacher", f"{tp_:.3f} / {ts_:.3f}",
         "1225 pairs"),
        ("Topic (lexname) accuracy, held-out synsets", f"{c['acc']:.3f}",
         f"n={c['n']}, {c['n_labels']} labels"),
        ("Topic macro-F1, held-out synsets", f"{c['macro_f1']:.3f}", ""),
        ("Majority-class baseline accuracy", f"{c['majority_acc']:.3f}", c["majority_label"]),
        ("Sentences/s, student (TorchScript, fp32)", f"{sp['student']:.0f}",
         f"{sp['texts']} held-out texts, batch 32, {args.threads} threads, median of {sp['runs']}"),
        ("Sentences/s, student (eager PyTorch, fp32)", f"{sp['eager']:.0f}", ""),
        ("Sentences/s, teacher (eager PyTorch, fp32)", f"{sp['teacher']:.0f}",
         f"student = {sp['ratio_student']:.1f}x (TorchScript) / {sp['ratio_eager']:.1f}x (eager)"),
    ]  # fmt: skip
    print("| metric | value | notes |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=float))


if __name__ == "__main__":
    main()
