"""What both Python peer servers share: bundle loading, tokenization, the forward pass and the
/v1/embed request and response shapes (the same JSON as aft-serve, so one load script drives all).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import uvicorn
from aft.bundle import load_manifest, load_scripted, load_tokenizer
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
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


def load_bundle(model_dir: Path, threads: int, precision: str = "auto") -> Bundle:
    """The bundle as aft-serve loads it on the CPU (aft.bundle), on `threads` torch intra-op
    threads: `precision` as aft-serve's --precision (auto: the bundle's int8 copy when it has
    one, as aft-serve serves it by default on the CPU; float: model.pt)."""
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    manifest = load_manifest(model_dir)
    if precision == "auto":
        precision = "int8" if manifest["int8_model"] else "float"
    return Bundle(
        name=manifest["name"],
        model=load_scripted(model_dir, precision),
        tokenizer=load_tokenizer(model_dir, manifest),
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


def add_probe_routes(app: FastAPI, stats: dict[str, int]) -> None:
    """GET /health/ready, and GET /metrics with the aft-serve names the harness reads; `stats`
    holds the running counts "batches" and "inputs" (one sequence per input)."""

    @app.get("/health/ready")
    async def ready() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            f"aft_batch_size_sum {stats['inputs']}\naft_batch_size_count {stats['batches']}\n"
            f"aft_inputs_total {stats['inputs']}\n"
        )


def serve(app: FastAPI, args: argparse.Namespace) -> None:
    """One uvicorn worker, quiet (no access log: it would cost CPU under load)."""
    uvicorn.run(
        app, host=args.host, port=args.port, workers=1, log_level="warning", access_log=False
    )


def arg_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument(
        "--precision",
        choices=("auto", "float", "int8"),
        default="auto",
        help="as aft-serve's: auto (the bundle's int8 copy when it has one), float or int8",
    )
    return ap
