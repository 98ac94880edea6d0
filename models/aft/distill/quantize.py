"""int8 dynamic quantization of a bundle's Linear layers (weights int8, activations quantized
per batch at run time), scripted as the service runs model.pt; CPU only (quantized Linear
layers have no CUDA kernels).

    python -m aft.distill.quantize --bundle models/aft-mini --out models/aft-mini-int8

The token table, layer norms and position biases stay floating point (stored float16, as the
float bundle stores them; loaders cast them to float32), and so do the output projection and
the classification head (`KEEP_FLOAT`). `aft.distill.evaluate --int8` scores the quantized
encoder beside the float one.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import torch.nn as nn

from aft.bundle import load_eager
from aft.export import MANIFEST, file_entry, sample_inputs

# The encoder's last projection to the embedding, and the head on it, stay float: quantizing
# them too cost aft-mini (stage 3) -0.0055 random-pair Spearman against the teacher, keeping
# them float -0.0023, at the same speed (MODEL_CARD.md of aft-mini-int8;
# `aft.distill.evaluate --int8 --int8-keep-float ...` scores other choices).
KEEP_FLOAT = ("proj", "head")


def quantized_layers(eager: nn.Module, keep_float: tuple[str, ...] = KEEP_FLOAT) -> set[str]:
    """The names of the Linear layers to quantize: all but those named in `keep_float`, each a
    module name or its last part (`to_k`: every block's key projection)."""

    def kept(name: str) -> bool:
        return name in keep_float or name.rsplit(".", 1)[-1] in keep_float

    return {n for n, m in eager.named_modules() if isinstance(m, nn.Linear) and not kept(n)}


def quantized_scripted(
    eager: nn.Module, keep_float: tuple[str, ...] = KEEP_FLOAT
) -> torch.jit.ScriptModule:
    """quantize_dynamic on the float32 eager encoder (those Linear layers -> int8 weights),
    then scripted."""
    model = eager.float().eval()
    layers = quantized_layers(model, keep_float)
    q = torch.ao.quantization.quantize_dynamic(model, layers, dtype=torch.qint8)
    return torch.jit.script(q).eval()


def check_close(eager: nn.Module, path: Path, min_cos: float = 0.99) -> None:
    """Reload model.pt as the service does (float32) and compare its embeddings with the float
    model's by cosine: int8 weights move every output a little, so elementwise bounds do not fit."""
    loaded = torch.jit.load(str(path), map_location="cpu").float().eval()
    ids, mask = sample_inputs(eager.config)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(eager(ids, mask)[0], loaded(ids, mask)[0])
    if cos.min().item() < min_cos:
        raise RuntimeError(f"int8 embeddings: cosine {cos.min().item():.4f} to float < {min_cos}")


def export_int8(bundle: Path, out: Path) -> Path:
    """A copy of `bundle` whose model.pt is the int8-quantized encoder; same manifest otherwise."""
    eager = load_eager(bundle)
    scripted = quantized_scripted(eager)
    out.mkdir(parents=True, exist_ok=True)
    scripted.half()  # float parameters (table, norms, biases) as float16; packed int8 untouched
    scripted.save(str(out / "model.pt"))
    check_close(eager, out / "model.pt")
    shutil.copy(bundle / "tokenizer.json", out / "tokenizer.json")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["name"] = out.name
    manifest["description"] += (
        " (int8 dynamic quantization of the Linear layers but the output projection and head;"
        " CPU only)"
    )
    manifest["files"] = {f: file_entry(out / f) for f in ("model.pt", "tokenizer.json")}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print(f"wrote {export_int8(args.bundle, args.out)}")


if __name__ == "__main__":
    main()
