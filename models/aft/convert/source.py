"""The converted model's source: a sentence-transformers folder holding a BERT-family encoder
(config.json, model.safetensors, tokenizer.json, modules.json and its pooling config)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from aft.distill.teacher import MiniLM


class SourceError(ValueError):
    """The folder is not a sentence-transformers BERT encoder this converter reads."""


@dataclass(frozen=True)
class SourceModel:
    folder: Path
    config: dict  # the folder's config.json
    pooling: str  # "mean" | "cls"
    normalize: bool  # a Normalize module ends the pipeline
    max_seq_len: int  # sentence_bert_config.json's max_seq_length (the teacher's window)

    @property
    def width(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def tokenizer(self) -> Path:
        return self.folder / "tokenizer.json"

    def teacher(self) -> MiniLM:
        return MiniLM(self.folder)


def _pooling(folder: Path, modules: list[dict]) -> str:
    pools = [m for m in modules if m.get("type", "").endswith("Pooling")]
    if not pools:
        return "mean"  # sentence-transformers' default for a bare transformer folder
    cfg_path = folder / pools[0].get("path", "1_Pooling") / "config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_mean_tokens", True):
        return "mean"
    modes = sorted(k for k, v in cfg.items() if k.startswith("pooling_mode") and v)
    raise SourceError(f"{cfg_path}: pooling {modes} not supported (mean or CLS only)")


def read_source(folder: Path) -> SourceModel:
    """Check the folder and read what the conversion needs; a clear SourceError otherwise."""
    folder = Path(folder)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / name).exists():
            raise SourceError(f"{folder}: no {name} (a sentence-transformers model folder)")
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type") != "bert":
        raise SourceError(f"{folder}: model_type {config.get('model_type')!r}, not 'bert'")
    if config.get("hidden_act", "gelu") != "gelu":
        raise SourceError(f"{folder}: activation {config['hidden_act']!r}, not 'gelu'")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise SourceError(f"{folder}: position embeddings {config['position_embedding_type']!r}")
    modules_path = folder / "modules.json"
    modules = json.loads(modules_path.read_text()) if modules_path.exists() else []
    st_path = folder / "sentence_bert_config.json"
    st = json.loads(st_path.read_text()) if st_path.exists() else {}
    return SourceModel(
        folder=folder,
        config=config,
        pooling=_pooling(folder, modules),
        normalize=any(m.get("type", "").endswith("Normalize") for m in modules),
        max_seq_len=int(st.get("max_seq_length", config.get("max_position_embeddings", 512))),
    )


def pooled(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """The sentence vector (B, d) of hidden states (B, T, d) as the source pools them."""
    if pooling == "cls":
        return states[:, 0]
    m = mask[:, :, None].to(states.dtype)
    return (states * m).sum(1) / m.sum(1).clamp_min(1.0)


def sentence_targets(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """L2-normalised float32 sentence vectors: what the distillation losses compare against."""
    return F.normalize(pooled(states.float(), mask, pooling), dim=-1)
