"""Write a model bundle (docs/bundle-format.md): model.pt (TorchScript), tokenizer.json and
manifest.json.

    python -m aft.export --checkpoint CKPT --tokenizer tokenizer.json --out DIR --name NAME \
        [--dtype float16] [--description TEXT] [--max-seq-len N]
    python -m aft.export --rebuild DIR

--rebuild writes a bundle's model.pt (and its int8 copy, if it has one) again from its own
parameters with today's encoder code and settings (e.g. slice_tokens), keeping its name,
description, labels, dtype and length limit: the outputs stay the same.

CKPT is torch.save({"config": asdict(cfg), "state_dict": model.state_dict(), "labels": [...]}).
With --dtype float16 the floating-point parameters are stored as half; loaders (the Rust service,
aft.bundle) cast them back to float32 before running. --max-seq-len sets the bundle's limit
(manifest max_seq_len and model.max_len) for variants without a position table (simple, conv,
decay), which run at any length: e.g. 65536 for a model trained on short texts.
"""

import argparse
import copy
import json
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from tokenizers import Tokenizer

from aft.encoder import POSITION_TABLES, AFTEncoder, EncoderConfig
from aft.manifest import FORMAT_VERSION, MANIFEST, file_entry, validate

DTYPES = {"float32": torch.float32, "float16": torch.float16}
# TorchScript methods model.pt exports beyond forward, listed in the manifest's "methods" so that
# readers know without loading it (a bundle from before embed_spans lists none).
METHODS = ["embed_spans"]


def sample_inputs(cfg: EncoderConfig, seed: int = 0, length: int = 24):
    """A right-padded batch with unequal lengths, for checking TorchScript against eager."""
    g = torch.Generator().manual_seed(seed)
    T = min(cfg.max_len, length)
    lengths = [T, max(1, T // 2), 1]
    ids = torch.randint(0, cfg.vocab_size, (len(lengths), T), generator=g)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids.masked_fill(mask == 0, cfg.pad_token_id), mask


def check_scripted(eager: AFTEncoder, path: Path, atol: float = 1e-5) -> None:
    """Reload model.pt as the service would (cast to float32) and compare with eager."""
    loaded = torch.jit.load(str(path), map_location="cpu").float().eval()
    # Short, and longer than one chunk of AFT-decay (64) so its carries are checked too.
    for ids, mask in (sample_inputs(eager.config), sample_inputs(eager.config, 1, 160)):
        with torch.no_grad():
            pairs = zip(eager(ids, mask), loaded(ids, mask), ("embeddings", "logits"), strict=True)
        for a, b, what in pairs:
            if a.shape != b.shape:
                raise RuntimeError(f"TorchScript {what} shape {tuple(b.shape)} != {tuple(a.shape)}")
            if a.numel() == 0:
                continue
            err = (a - b).abs().max().item()
            if err > atol * (1.0 + a.abs().max().item()):
                raise RuntimeError(f"TorchScript {what} differ from eager by {err:.3g}")
        # Two spans of the longest row and one of the shortest (embed_spans, late chunking).
        T = int(mask[0].sum())
        spans = torch.tensor([[0, 0, max(1, T // 2)], [0, T // 3, T], [2, 0, 1]])
        with torch.no_grad():
            a = eager.embed_spans(ids, mask, spans)[2]
            b = loaded.embed_spans(ids, mask, spans)[2]
        err = (a - b).abs().max().item()
        if a.shape != b.shape or err > atol * (1.0 + a.abs().max().item()):
            raise RuntimeError(f"TorchScript embed_spans differ from eager by {err:.3g}")


def export_bundle(
    model: AFTEncoder,
    tokenizer_path,
    out_dir,
    name: str,
    labels: list[str] | None = None,
    dtype: str = "float32",
    description: str = "",
    max_seq_len: int | None = None,
) -> Path:
    """Script `model` into out_dir with its tokenizer and manifest. max_seq_len (default: the
    model's max_len) is the longest input the bundle accepts; only variants without a position
    table may change it, since full/local learn a bias for max_len positions exactly."""
    cfg = model.config
    if max_seq_len is not None and max_seq_len != cfg.max_len:
        if cfg.variant in POSITION_TABLES:
            raise ValueError(
                f"variant {cfg.variant!r} learns a position bias for max_len={cfg.max_len} "
                "positions: its max_seq_len cannot change"
            )
        if max_seq_len < 2:
            raise ValueError("max_seq_len must be at least 2")
        cfg = replace(cfg, max_len=max_seq_len)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}")
    if labels is not None and len(labels) != cfg.num_labels:
        raise ValueError(f"{len(labels)} labels for a head of {cfg.num_labels} outputs")
    if labels is None and cfg.num_labels > 0:
        labels = [str(i) for i in range(cfg.num_labels)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    stored = copy.deepcopy(model).cpu().eval().to(DTYPES[dtype])
    stored.config, stored.max_len = cfg, cfg.max_len
    torch.jit.script(stored).save(str(out / "model.pt"))
    # The reference is the eager model with the parameters as stored, back in float32.
    check_scripted(copy.deepcopy(stored).float(), out / "model.pt")

    # The service tokenizes one text at a time: no padding, truncation at max_seq_len.
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_padding()
    tok.enable_truncation(cfg.max_len)
    tok.save(str(out / "tokenizer.json"))
    files = {f: file_entry(out / f) for f in ("model.pt", "tokenizer.json")}
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "model": asdict(cfg),
        "embedding_dim": cfg.out_dim,
        "max_seq_len": cfg.max_len,
        "pooling": cfg.pooling,
        "normalize": cfg.normalize,
        "pad_token_id": cfg.pad_token_id,
        "dtype": dtype,
        "labels": labels,
        "methods": METHODS,
        "files": files,
        "torch_version": torch.__version__.split("+")[0],
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    validate(manifest, str(out / MANIFEST))
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def rebuild(bundle_dir) -> Path:
    """Re-export a bundle in place from its own parameters (see the module doc)."""
    from aft.bundle import load_eager, load_manifest
    from aft.distill.quantize import add_int8

    d = Path(bundle_dir)
    m = load_manifest(d)
    tok = d / "tokenizer.json"
    tmp = d / "tokenizer.rebuild.json"
    tmp.write_bytes(tok.read_bytes())  # export_bundle rewrites tokenizer.json from its source
    try:
        export_bundle(load_eager(d), tmp, d, m["name"], m["labels"] or None, m["dtype"],
                      m["description"], m["max_seq_len"])  # fmt: skip
    finally:
        tmp.unlink()
    if m.get("int8_model"):
        add_int8(d)
    return d


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rebuild", help="re-export this bundle in place; no other argument")
    p.add_argument("--checkpoint")
    p.add_argument("--tokenizer")
    p.add_argument("--out")
    p.add_argument("--name")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--description", default="")
    p.add_argument(
        "--max-seq-len",
        type=int,
        help="longest input the bundle accepts (simple, conv, decay only; default: max_len)",
    )
    a = p.parse_args(argv)
    if a.rebuild:
        print(f"rebuilt {rebuild(a.rebuild)}")
        return
    missing = [f"--{k}" for k in ("checkpoint", "tokenizer", "out", "name") if not getattr(a, k)]
    if missing:
        p.error(f"{', '.join(missing)} required (or --rebuild DIR)")
    ckpt = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
    model = AFTEncoder(EncoderConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["state_dict"])
    out = export_bundle(
        model, a.tokenizer, a.out, a.name, ckpt.get("labels"), a.dtype, a.description, a.max_seq_len
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
