"""Reference outputs of a bundle's eager model, for the Rust service's tests to compare against.

    python -m aft.reference --bundle DIR --texts FILE.json --out OUT.json

FILE.json is a JSON list of strings (or {"texts": [...]}). Each text is tokenized alone with the
bundle's tokenizer.json (truncated to max_seq_len, no padding) and run alone. OUT.json:
{"texts": [...], "embeddings": [[...]], "logits": [[...]], "token_counts": [...]}; embeddings are
the raw pooled ones (not normalised), as model.pt returns them.
"""

import argparse
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer

from aft.bundle import load_eager, load_manifest


def reference_outputs(bundle_dir, texts) -> dict:
    d = Path(bundle_dir)
    manifest = load_manifest(d)
    model = load_eager(d)
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(manifest["max_seq_len"])
    out = {"texts": list(texts), "embeddings": [], "logits": [], "token_counts": []}
    with torch.no_grad():
        for text in texts:
            enc = tok.encode(text)
            ids = torch.tensor([enc.ids], dtype=torch.long)
            mask = torch.tensor([enc.attention_mask], dtype=torch.long)
            emb, logits = model(ids, mask)
            out["embeddings"].append(emb[0].tolist())
            out["logits"].append(logits[0].tolist())
            out["token_counts"].append(len(enc.ids))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    texts = json.loads(Path(a.texts).read_text())
    if isinstance(texts, dict):
        texts = texts["texts"]
    if not all(isinstance(t, str) for t in texts):
        raise SystemExit(f"{a.texts}: expected a JSON list of strings")
    Path(a.out).write_text(json.dumps(reference_outputs(a.bundle, texts)) + "\n")


if __name__ == "__main__":
    main()
