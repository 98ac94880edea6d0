"""Size the student by measurement: forward cost (as the service runs it) and training-step cost
of candidate shapes, interleaved with the current aft-mini shape so that load from other
processes hits all alike.

    python -m aft.distill.sizing --json ../.work/sizing.json

Forward: TorchScript in float32 (the service's path), on real held-out sentences of 15-19
tokens, a batch of 32 and a batch of 1, with 1 and 2 threads; each figure is the median over
rounds, and the ratio to aft-mini the median of the per-round ratios. Training step: batch 128
of training-length texts, forward + backward + AdamW, 2 threads, float32 and bfloat16 autocast.
Weights are random: the cost does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from aft.distill.embed import load_shards
from aft.distill.losses import distill_loss
from aft.distill.student import student_config
from aft.distill.teacher import load_tokenizer
from aft.encoder import AFTEncoder
from aft.head.embed import pad

PAD_ID = student_config("full").pad_token_id

# name -> shape overrides of student_config("full"); "aft-mini" is the shipped shape.
CANDIDATES: dict[str, dict] = {
    "aft-mini": {},
    "d256-L6-ff1024": {"n_layers": 6, "d_ff": 1024},
    "d256-L5-ff1024": {"n_layers": 5, "d_ff": 1024},
    "d256-L8-ff768": {"n_layers": 8},
    "d320-L4-ff1280": {"d_model": 320, "d_ff": 1280},
    "d320-L6-ff1280": {"d_model": 320, "n_layers": 6, "d_ff": 1280},
    "d384-L4-ff1536": {"d_model": 384, "d_ff": 1536},
    "d384-L4-ff1536-e256": {"d_model": 384, "d_ff": 1536, "token_embedding_dim": 256},
    "d384-L6-ff1536": {"d_model": 384, "n_layers": 6, "d_ff": 1536},
    "d320-L6-ff1280-r128": {"d_model": 320, "n_layers": 6, "d_ff": 1280, "bias_rank": 128},
}


def bundle_mb(model: AFTEncoder) -> float:
    """float16 bytes of the parameters (model.pt adds ~0.1 MB of code), plus the tokenizer."""
    return (sum(p.numel() for p in model.parameters()) * 2 + 711_494) / 1e6


def sentence_batches(texts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Batches of 32 and of 1 from held-out texts of 15-19 tokens ([CLS]/[SEP] included)."""
    tok = load_tokenizer()
    short = [t for t in texts if 15 <= len(tok.encode(t).ids) <= 19][:32]
    if len(short) < 32:
        raise SystemExit("fewer than 32 held-out texts of 15-19 tokens")
    ids, mask = pad([tok.encode(t).ids for t in short], PAD_ID)
    return {
        "b32": (ids, mask),
        "b1": (ids[:1, : int(mask[0].sum())], mask[:1, : int(mask[0].sum())]),
    }


def time_forward(model, ids, mask, reps: int) -> float:
    """Seconds per sentence over `reps` forwards."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(reps):
            model(ids, mask)
    return (time.perf_counter() - t0) / (reps * ids.shape[0])


def time_train_step(model: AFTEncoder, seqs, targets, bf16: bool, steps: int = 3) -> float:
    """Seconds per training step (batch = len(seqs)), after one warm-up step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, mask = pad(seqs, PAD_ID)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            raw, _ = model(ids, mask)
        loss = distill_loss(raw.float(), targets, 2.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, default=Path("../.work/teacher"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated candidate names")
    ap.add_argument(
        "--threads", default="1,2", help="thread counts for the forward timings ('': none)"
    )
    ap.add_argument("--train-threads", type=int, default=2)
    ap.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(CANDIDATES)
    if "aft-mini" not in names:
        names.insert(0, "aft-mini")

    held, _ = load_shards(args.teacher, "heldout")
    batches = sentence_batches([r["text"] for r in held])
    torch.manual_seed(0)
    eager = {n: AFTEncoder(student_config("full", **CANDIDATES[n])).eval() for n in names}
    scripted = {n: torch.jit.script(m) for n, m in eager.items()}
    res: dict[str, dict] = {
        n: {
            "config": {k: v for k, v in asdict(m.config).items() if k in CANDIDATES[n] or k in (
                "d_model", "n_layers", "d_ff", "bias_rank", "token_embedding_dim")},
            "params_m": sum(p.numel() for p in m.parameters()) / 1e6,
            "bundle_mb": bundle_mb(m),
        }
        for n, m in eager.items()
    }  # fmt: skip

    for threads in [int(x) for x in args.threads.split(",") if x]:
        torch.set_num_threads(threads)
        for key, (ids, mask) in batches.items():
            reps = 5 if key == "b32" else 40
            for m in scripted.values():  # warm-up: TorchScript profiles, then optimises
                for _ in range(4):
                    time_forward(m, ids, mask, 2)
            per: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(args.rounds):
                for n in names:
                    per[n].append(time_forward(scripted[n], ids, mask, reps))
            label = f"{key}_t{threads}"
            for n in names:
                ratios = [a / b for a, b in zip(per[n], per["aft-mini"], strict=True)]
                res[n][f"{label}_us"] = statistics.median(per[n]) * 1e6
                res[n][f"{label}_ratio"] = statistics.median(ratios)
            print(f"{label}: " + ", ".join(f"{n} {res[n][f'{label}_ratio']:.2f}x" for n in names),
                  flush=True)  # fmt: skip

    if not args.no_train:
        torch.set_num_threads(args.train_threads)
        tok = load_tokenizer(128)
        recs, t = load_shards(args.teacher, "train")
        # A typical length-bucketed batch: the 128 texts around the median length.
        all_ids = [e.ids for e in tok.encode_batch([r["text"] for r in recs])]
        order = sorted(range(len(all_ids)), key=lambda i: len(all_ids[i]))
        mid = order[len(order) // 2 - 64 : len(order) // 2 + 64]
        seqs = [all_ids[i] for i in mid]
        targets = torch.nn.functional.normalize(torch.from_numpy(t[mid]), dim=-1)
        for n in names:
            for bf16 in (False, True):
                m = AFTEncoder(student_config("full", **CANDIDATES[n])).train()
                s = time_train_step(m, seqs, targets, bf16)
                res[n]["train_step_bf16_s" if bf16 else "train_step_s"] = s
            print(f"train {n}: {res[n]['train_step_s']:.3f}s fp32, "
                  f"{res[n]['train_step_bf16_s']:.3f}s bf16", flush=True)  # fmt: skip

    labels = [k[:-6] for k in res["aft-mini"] if k.endswith("_ratio")]
    if args.train_threads != 2:
        print(f"(training steps with {args.train_threads} threads)")
    heads = [f"{k.split('_')[0].replace('b', 'batch ')}, {k.split('_')[1][1:]} thr" for k in labels]
    print(" | ".join(["| candidate", "params (M)", "bundle MB (fp16)", *heads,
                      "train step fp32 / bf16 (s) |"]))  # fmt: skip
    print("| --- |" + " ---: |" * (len(labels) + 3))
    for n in names:
        r = res[n]
        cells = [f"{r['params_m']:.2f}", f"{r['bundle_mb']:.1f}"]
        cells += [f"{r[k + '_us']:.0f} us ({r[k + '_ratio']:.2f}x)" for k in labels]
        if "train_step_s" in r:
            cells.append(f"{r['train_step_s']:.2f} / {r['train_step_bf16_s']:.2f}")
        else:
            cells.append("-")
        print(f"| {n} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
