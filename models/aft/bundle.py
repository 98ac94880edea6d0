"""Read a model bundle (docs/bundle-format.md): validate the manifest, rebuild the eager model."""

import json
from dataclasses import fields
from pathlib import Path

import torch
from tokenizers import Tokenizer

from aft.encoder import AFTEncoder, EncoderConfig
from aft.manifest import MANIFEST, file_entry, model_file, validate


def _fail(where: str, what: str):
    raise ValueError(f"{where}: {what}")


def load_manifest(bundle_dir) -> dict:
    """Parse and validate manifest.json: the schema (docs/manifest.schema.json; absent fields get
    their defaults), the encoder's fields, the label count, file hashes."""
    d = Path(bundle_dir)
    path = d / MANIFEST
    if not path.is_file():
        _fail(str(path), "missing")
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        _fail(str(path), f"not JSON ({e})")
    where = str(path)
    if not isinstance(m, dict):
        _fail(where, "not a JSON object")
    m = validate(m, where)
    names = {f.name for f in fields(EncoderConfig)}
    unknown = set(m["model"]) - names
    if unknown:
        _fail(where, f"field 'model' has unknown keys {sorted(unknown)}")
    labels = m["labels"]
    n_labels = m["model"].get("num_labels", 0)
    if (labels is None and n_labels) or (labels is not None and len(labels) != n_labels):
        _fail(where, f"field 'labels' does not match model.num_labels={n_labels}")
    for name, entry in m["files"].items():
        f = d / name
        if not f.is_file():
            _fail(str(f), f"listed in field 'files' of {where} but missing")
        actual = file_entry(f)
        for k in ("sha256", "size"):
            if entry.get(k) != actual[k]:
                _fail(str(f), f"{k} {actual[k]} does not match field 'files.{name}.{k}' of {where}")
    return m


def load_eager(bundle_dir) -> AFTEncoder:
    """The eager float32 model, rebuilt from manifest['model'] and model.pt's parameters."""
    d = Path(bundle_dir)
    m = load_manifest(d)
    model = AFTEncoder(EncoderConfig(**m["model"]))
    scripted = torch.jit.load(str(d / "model.pt"), map_location="cpu")
    state = {k: v.float() if v.is_floating_point() else v for k, v in scripted.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


def load_tokenizer(bundle_dir, manifest: dict | None = None) -> Tokenizer:
    """tokenizer.json as the service uses it: truncated to max_seq_len, no padding."""
    d = Path(bundle_dir)
    m = manifest if manifest is not None else load_manifest(d)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(m["max_seq_len"])
    return tok


def load_scripted(bundle_dir, precision: str = "float") -> torch.jit.ScriptModule:
    """The model file as the service runs it: float32 (parameters may be stored in float16), eval
    mode. `precision` "int8" loads the bundle's int8 copy (manifest `int8_model`) instead of
    model.pt."""
    d = Path(bundle_dir)
    name = model_file(load_manifest(d), precision) if precision != "float" else "model.pt"
    scripted = torch.jit.load(str(d / name), map_location="cpu")
    return scripted.float().eval()
