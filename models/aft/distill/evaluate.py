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

from aft.bundle import load_eager
from aft.distill.corpus import load
from aft.distill.embed import heldout_sample, load_shards
from aft.distill.monitor import embed_raw
from aft.distill.teacher import Teacher, batch_ids
from aft.encoder import AFTEncoder, EncoderConfig

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
    rho_sim = spearmanr((s[ia] * s[ib]).sum(-1), tt[ia, ib]).statistic if len(ia) > 2 else np.nan
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
def speed(models: dict, tok, texts: list[str], runs: int = 5) -> dict:
    """Sentences/s of each model's forward on identical padded batches of 32 (tokenized once).

    `models` maps names to callables (ids, mask); one must be "teacher". Runs alternate the
    models so that load from other processes hits all alike; each ratio to the teacher is the
    median of the per-run ratios."""
    batches = [batch_ids(tok, texts[i : i + 32]) for i in range(0, len(texts), 32)]
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
    for k in models:
        if k != "teacher":
            pairs = zip(rates[k], rates["teacher"], strict=True)
            out[f"ratio_{k}"] = statistics.median(s / t for s, t in pairs)
    out["runs"], out["texts"] = runs, len(texts)
    return out


def load_checkpoint_student(path: Path) -> AFTEncoder:
    """An encoder saved by aft.distill.train (student.pt: config + state_dict), eager float32."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model = AFTEncoder(EncoderConfig(**ck["config"]))
    model.load_state_dict(ck["state_dict"])
    return model.float().eval()


def source_metrics(s: np.ndarray, t: np.ndarray, n_pairs: int = 5000) -> dict:
    """The pair and retrieval metrics within one source's sample (all its texts as candidates)."""
    m = pair_metrics(s, t, n_pairs) | retrieval(s, t, len(t))
    m["n"] = len(t)
    return m


def per_source(model, tok, recs: list[dict], t: np.ndarray) -> dict[str, dict]:
    s, _ = student_outputs(model, tok, [r["text"] for r in recs])
    src = np.array([r["source"] for r in recs])
    return {name: source_metrics(s[src == name], t[src == name]) for name in sorted(set(src))}


def loso_run(run: Path) -> tuple[AFTEncoder, dict]:
    """(eager model, log with steps, train_texts and texts per source) of one leave-one-source-out
    run: aft.distill.train's (student.pt, train_log.json) or aft.convert's (bundle/,
    convert_log.json; exported with --export <run>/bundle)."""
    if (run / "student.pt").exists():
        return load_checkpoint_student(run / "student.pt"), json.loads(
            (run / "train_log.json").read_text()
        )
    return load_eager(run / "bundle"), json.loads((run / "convert_log.json").read_text())


def loso(loso_dir: Path, tok, recs: list[dict], t: np.ndarray, main_scores: dict) -> list[dict]:
    """Leave-one-source-out: each run `without-<source>` under loso_dir, and the same-budget run
    `all`, scored on the left-out source's held-out sample."""
    src = np.array([r["source"] for r in recs])
    texts = [r["text"] for r in recs]
    base, base_log = loso_run(loso_dir / "all")
    rows = []
    for d in sorted(loso_dir.glob("without-*")):
        name = d.name.removeprefix("without-")
        if not any((d / f).exists() for f in ("student.pt", "bundle")) or name not in src:
            continue
        sel = src == name
        sub = [x for x, k in zip(texts, sel, strict=True) if k]
        without, log = loso_run(d)
        row = {"source": name, "train_texts_in_all": base_log["sources"].get(name, 0)}
        for key, model in (("all", base), ("without", without)):
            e = F.normalize(embed_raw(model, [x.ids for x in tok.encode_batch(sub)]), dim=-1)
            row[key] = source_metrics(e.numpy(), t[sel])
        row["main"] = main_scores[name]
        row["steps"], row["budget_texts"] = log["steps"], log["train_texts"]
        rows.append(row)
    return rows


def int8_bundle_scores(
    bundle: Path,
    tok,
    texts: list[str],
    t: np.ndarray,
    n_pairs: int,
    keep_float: tuple[str, ...] | None = None,
):
    """The bundle's int8 copy (manifest `int8_model`, as aft-serve's `--precision int8` runs
    it), or with `keep_float` the bundle's encoder quantized here with int8 dynamic quantization
    of its Linear layers but those (aft.distill.quantize), scripted."""
    if keep_float is None:
        from aft.bundle import load_scripted

        q = load_scripted(bundle, "int8")
    else:
        from aft.distill.quantize import quantized_scripted

        q = quantized_scripted(load_eager(bundle), keep_float)
    s, _ = student_outputs(q, tok, texts)
    return q, {"pairs": pair_metrics(s, t, n_pairs), "retrieval": retrieval(s, t)}


def f3(x: float) -> str:
    return "-" if x != x else f"{x:.3f}"  # NaN (too few pairs) shows as a dash


def main_rows(r: dict, threads: int) -> list[tuple[str, str, str]]:
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
         f"{sp['texts']} held-out texts, batch 32, {threads} threads, median of {sp['runs']}"),
        ("Sentences/s, student (eager PyTorch, fp32)", f"{sp['eager']:.0f}", ""),
    ]  # fmt: skip
    if "int8" in r:
        q, qp, qr = sp["int8"], r["int8"]["pairs"], r["int8"]["retrieval"]
        rows += [
            ("Sentences/s, student int8 dynamic (TorchScript)", f"{q:.0f}",
             f"{sp['ratio_int8']:.1f}x the teacher"),
            ("int8: Spearman random / similar pairs, recall@10",
             f"{qp['rho_random']:.3f} / {qp['rho_similar']:.3f} / {qr['r10']:.3f}",
             f"{qp['rho_random'] - p['rho_random']:+.4f} random-pair Spearman vs fp32"),
        ]  # fmt: skip
    if "against" in sp:
        rows.append(
            (f"Sentences/s, {r['against']} (TorchScript, fp32)", f"{sp['against']:.0f}",
             f"{sp['ratio_against']:.1f}x the teacher, in the same interleaved runs")
        )  # fmt: skip
    rows.append(
        ("Sentences/s, teacher (eager PyTorch, fp32)", f"{sp['teacher']:.0f}",
         f"student = {sp['ratio_student']:.1f}x (TorchScript) / {sp['ratio_eager']:.1f}x (eager)")
    )  # fmt: skip
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return "\n".join(out + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def source_table(scores: dict[str, dict], train_counts: dict[str, int], counts_of: str) -> str:
    rows = [
        [name, f"{train_counts.get(name, 0):,}", m["n"], f3(m["rho_random"]),
         f"{f3(m['rho_similar'])} ({m['n_similar']})", f3(m["r1"]), f3(m["r10"])]
        for name, m in sorted(scores.items(), key=lambda kv: kv[1]["rho_random"])
    ]  # fmt: skip
    header = ["source", counts_of, "held-out texts", "Spearman, random pairs",
              "Spearman, similar pairs (n)", "recall@1", "recall@10"]  # fmt: skip
    return table(header, rows)


def loso_table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        a, w, m = r["all"], r["without"], r["main"]
        out.append([
            r["source"], f"{r['train_texts_in_all']:,}", a["n"],
            f"{f3(a['rho_random'])} / {f3(a['r10'])}", f"{f3(w['rho_random'])} / {f3(w['r10'])}",
            f"{w['rho_random'] - a['rho_random']:+.3f}", f"{f3(m['rho_random'])} / {f3(m['r10'])}",
        ])  # fmt: skip
    header = ["left-out source", "its texts in the all-source run", "held-out texts scored",
              "all sources: Spearman / R@10", "without it: Spearman / R@10",
              "change in Spearman", "main student: Spearman / R@10"]  # fmt: skip
    return table(header, out)


def train_source_counts(teacher_dir: Path) -> dict[str, int]:
    """Labelled training texts per source, over all complete shards."""
    from collections import Counter

    counts: Counter = Counter()
    for npy in sorted(teacher_dir.glob("train-[0-9][0-9][0-9].npy")):
        for line in npy.with_suffix(".jsonl").read_text().splitlines():
            counts[json.loads(line)["source"]] += 1
    return dict(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("aft-mini"))
    ap.add_argument("--corpus", type=Path, default=Path("../.work/corpus"))
    ap.add_argument("--teacher", type=Path, default=Path("../.work/teacher"))
    ap.add_argument("--eval-cache", type=Path, default=Path("../.work/eval-cache"))
    ap.add_argument("--heldout", type=int, default=4096, help="held-out texts used (max 4096)")
    ap.add_argument("--n-pairs", type=int, default=10000)
    ap.add_argument("--max-class", type=int, default=4000)
    ap.add_argument("--speed-texts", type=int, default=320)
    ap.add_argument("--speed-runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--int8",
        action="store_true",
        help="also score the bundle's int8 copy (manifest int8_model, aft.distill.quantize)",
    )
    ap.add_argument(
        "--int8-keep-float",
        default=None,
        help="score instead the bundle's model quantized here, leaving these Linear layers "
        "float: names or last name parts, comma-separated (aft.distill.quantize leaves "
        "proj,head; '' quantizes every one); implies --int8",
    )
    ap.add_argument(
        "--speed-against", type=Path, default=None, help="another bundle, timed in the same runs"
    )
    ap.add_argument("--loso", type=Path, default=None, help="leave-one-source-out runs' folder")
    ap.add_argument("--train-log", type=Path, default=None, help="train_log.json of the bundle")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the tables here")
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
    models = {"student": student, "eager": load_eager(args.bundle), "teacher": teacher.model}
    if args.int8 or args.int8_keep_float is not None:
        keep = None
        if args.int8_keep_float is not None:
            keep = tuple(x for x in args.int8_keep_float.split(",") if x)
        models["int8"], r["int8"] = int8_bundle_scores(
            args.bundle, tok, texts, t, args.n_pairs, keep
        )
    if args.speed_against:  # e.g. the model this one replaces: speed side by side
        models["against"], _, _ = load_student(args.speed_against)
        r["against"] = str(args.speed_against)
    r["speed"] = speed(models, tok, texts[: args.speed_texts], args.speed_runs)

    from aft.distill.samples import load_samples

    recs, st = load_samples(args.corpus, args.eval_cache)["per_source"]
    r["per_source"] = per_source(student, tok, recs, st)
    if args.train_log:  # the texts the model was trained on, per source
        counts = json.loads(args.train_log.read_text())["sources"]
        counts_of = "training texts"
    else:
        counts, counts_of = train_source_counts(args.teacher), "labelled texts in the cache"
    md = ["### All held-out text\n", table(["metric", "value", "notes"],
                                            main_rows(r, args.threads))]  # fmt: skip
    title = (f"\n### Per source of the held-out split ({len(recs)} texts, up to 300 a source; "
             "pairs and neighbours within a source)\n")  # fmt: skip
    md += [title, source_table(r["per_source"], counts, counts_of)]
    if args.loso:
        r["loso"] = loso(args.loso, tok, recs, st, r["per_source"])
        md += ["\n### Leave-one-source-out\n", loso_table(r["loso"])]
    text = "\n".join(md) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(r, indent=1, default=float))


if __name__ == "__main__":
    main()
