"""int8 dynamic quantization of a bundle's Linear layers (weights int8, activations quantized
per batch at run time), scripted as the service runs model.pt, written into the same bundle as
its int8 copy; CPU only (quantized Linear layers have no CUDA kernels).

    python -m aft.distill.quantize --bundle models/aft-mini

adds `model-int8.pt` to the bundle, lists it in the manifest's `files` (sha256, size) and names
it in `int8_model` (docs/bundle-format.md); aft-serve's `--precision auto` serves it on CPU.
The token table, layer norms and position biases stay floating point (stored float16, as the
float bundle stores them; loaders cast them to float32), and so do the output projection and
the classification head (`KEEP_FLOAT`). `aft.distill.evaluate --int8` scores the quantized
encoder beside the float one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn as nn

from aft.bundle import load_eager, load_manifest
from aft.export import MANIFEST, file_entry, sample_inputs
from aft.manifest import INT8_MODEL, MODEL_FILE, validate

# The int8 copy's file name inside the bundle.
INT8_FILE = "model-int8.pt"

# The encoder's last projection to the embedding, and the head on it, stay float: quantizing
# them too cost aft-mini (stage 3) -0.0055 random-pair Spearman against the teacher, keeping
# them float -0.0023, at the same speed (aft-mini's MODEL_CARD.md, "int8";
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
    """Reload the int8 file as the service does (float32) and compare its embeddings with the float
    model's by cosine: int8 weights move every output a little, so elementwise bounds do not fit."""
    loaded = torch.jit.load(str(path), map_location="cpu").float().eval()
    ids, mask = sample_inputs(eager.config)
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(eager(ids, mask)[0], loaded(ids, mask)[0])
    if cos.min().item() < min_cos:
        raise RuntimeError(f"int8 embeddings: cosine {cos.min().item():.4f} to float < {min_cos}")


def write_int8(eager: nn.Module, path: Path) -> None:
    """The int8-quantized `eager` encoder, scripted, saved at `path` and checked against it."""
    scripted = quantized_scripted(eager)
    scripted.half()  # float parameters (table, norms, biases) as float16; packed int8 untouched
    scripted.save(str(path))
    check_close(eager, path)


def add_int8(bundle: Path) -> Path:
    """Quantizes `bundle`'s model.pt into `bundle`/model-int8.pt (replacing an earlier one) and
    records it in the manifest: `int8_model` and its `files` entry. Returns the file's path."""
    eager = load_eager(bundle)  # validates the bundle, hashes included
    path = bundle / INT8_FILE
    write_int8(eager, path)
    manifest_path = bundle / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest[INT8_MODEL] = INT8_FILE
    files = {k: v for k, v in manifest["files"].items() if k != INT8_FILE}
    manifest["files"] = {MODEL_FILE: files.pop(MODEL_FILE), INT8_FILE: file_entry(path), **files}
    validate(manifest, str(manifest_path))
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    load_manifest(bundle)  # as readers see it: every listed file's hash
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True, help="the bundle to add model-int8.pt to")
    args = ap.parse_args()
    print(f"wrote {add_int8(args.bundle)} and {args.bundle / MANIFEST}")


if __name__ == "__main__":
    main()
