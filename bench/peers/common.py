"""What both Python peer servers share: bundle loading, tokenization, the forward pass and the
/v1/embed request and response shapes (the same JSON as aft-serve, so one load script drives all).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer


@dataclass
class Bundle:
    name: str
    model: torch.jit.ScriptModule
    tokenizer: Tokenizer
    max_seq_len: int
    pad_id: int
    normalize: bool
    dim: int


def load_bundle(model_dir: Path, threads: int) -> Bundle:
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    model = torch.jit.load(str(model_dir / "model.pt"), map_location="cpu")
    model = model.float().eval()  # parameters may be stored in float16
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(manifest["max_seq_len"])
    tok.no_padding()
    return Bundle(
        name=manifest["name"],
        model=model,
        tokenizer=tok,
        max_seq_len=manifest["max_seq_len"],
        pad_id=manifest["pad_token_id"],
        normalize=manifest["normalize"],
        dim=manifest["embedding_dim"],
    )


def tokenize(bundle: Bundle, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in bundle.tokenizer.encode_batch(texts)]


def forward(bundle: Bundle, seqs: list[list[int]]) -> torch.Tensor:
    """Embeddings (B, D) for token id lists, right-padded to the longest."""
    longest = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), longest), bundle.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    with torch.inference_mode():
        emb, _ = bundle.model(ids, mask)
    return emb


def parse_request(body: dict) -> tuple[list[str], bool, int | None]:
    inputs = body["inputs"]
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    return texts, body.get("normalize"), body.get("dimensions")


def response(bundle: Bundle, emb: torch.Tensor, seqs, normalize, dimensions) -> bytes:
    if normalize is None:
        normalize = bundle.normalize
    if dimensions:
        emb = emb[:, :dimensions]
    if normalize:
        emb = torch.nn.functional.normalize(emb, dim=-1)
    tokens = sum(len(s) for s in seqs)
    out = {
        "model": bundle.name,
        "embeddings": emb.tolist(),
        "dimensions": emb.shape[1],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json.dumps(out).encode()


def batch_metrics_text(batches: int, batch_sum: int, inputs: int) -> str:
    """Prometheus text with the aft-serve names the load driver reads."""
    return (
        f"aft_batch_size_sum {batch_sum}\naft_batch_size_count {batches}\n"
        f"aft_inputs_total {inputs}\n"
    )


def arg_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    return ap
