"""The AFT sentence encoder: embeddings -> N pre-LayerNorm (AFT + feed-forward) blocks -> final
LayerNorm -> masked mean (or CLS) pooling -> optional projection -> optional classifier head.
With norm="post" (a BERT converted by `aft.convert`) the blocks are post-LayerNorm, the token
embeddings pass a LayerNorm first (embedding_norm) and there is no final LayerNorm.

forward(input_ids, attention_mask) -> (raw pooled embeddings (B, D), logits (B, num_labels)); this
is the TorchScript contract of docs/bundle-format.md. embed_spans(input_ids, attention_mask, spans)
adds one vector per token span [start, end) of a row, pooled from the same pass (late chunking).
Right padding; a padded position never changes a real one, so a sentence alone and inside a padded
batch give the same output.
"""

from dataclasses import dataclass
from typing import Final

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from aft.decay import DecayPart, decay_carries
from aft.modules import AFTConv, AFTDecay, AFTFull, AFTLocal, AFTSimple

VARIANTS = ("full", "local", "simple", "conv", "decay")
# Variants whose parameters depend on max_len (a learned (max_len, max_len) bias): the others run at
# any length, and max_len is only the limit the bundle states.
POSITION_TABLES = ("full", "local")


@dataclass
class EncoderConfig:
    vocab_size: int
    d_model: int
    n_layers: int
    d_ff: int
    max_len: int
    variant: str  # "full" | "local" | "simple" | "conv" | "decay"
    causal: bool = False
    window: int = 32  # local: bias kept where |t - t'| < window
    n_heads: int = 8  # conv, decay
    kernel_size: int = 31  # conv; odd
    bias_rank: int = 64  # full/local: rank of w = u v^T
    dropout: float = 0.0
    pooling: str = "mean"  # "mean" | "cls"
    normalize: bool = True  # encode() L2-normalises; forward() never does
    num_labels: int = 0  # 0 = no classifier head
    pad_token_id: int = 0
    embedding_dim: int | None = None  # output width D; a final Linear when != d_model
    token_embedding_dim: int | None = None  # factorised embedding: vocab x e, then e -> d_model
    norm: str = "pre"  # "pre": x + f(LN(x)); "post" (BERT): LN(x + f(x)), no final LayerNorm
    embedding_norm: bool = False  # a LayerNorm on the token embeddings (BERT's)
    norm_eps: float = 1e-5
    # decay: inputs longer than this run block by block over slices of this many positions
    # (rounded down to whole chunks), so that each slice's activations stay in the CPU's cache
    # (docs/LONG_DOCUMENTS.md); 0: always the whole sequence at once. Same outputs either way.
    slice_tokens: int = 2048

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, not {self.variant!r}")
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm must be 'pre' or 'post', not {self.norm!r}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', not {self.pooling!r}")
        if self.variant == "conv" and self.kernel_size % 2 != 1:
            raise ValueError("kernel_size must be odd")
        if self.variant in ("conv", "decay") and self.d_model % self.n_heads != 0:
            raise ValueError("d_model must be a multiple of n_heads")

    @property
    def out_dim(self) -> int:
        return self.embedding_dim or self.d_model


def make_attention(cfg: EncoderConfig) -> nn.Module:
    d, causal = cfg.d_model, cfg.causal
    if cfg.variant == "full":
        return AFTFull(d, cfg.max_len, cfg.bias_rank, causal)
    if cfg.variant == "local":
        return AFTLocal(d, cfg.max_len, cfg.window, cfg.bias_rank, causal)
    if cfg.variant == "simple":
        return AFTSimple(d, causal)
    if cfg.variant == "decay":
        return AFTDecay(d, cfg.n_heads, causal)
    return AFTConv(d, cfg.n_heads, cfg.kernel_size, causal)


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.post_norm = cfg.norm == "post"
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = make_attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.d_model)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.after_mix(x, self.attn(self.mix_input(x), mask))

    def mix_input(self, x: Tensor) -> Tensor:
        """What the token mixing reads: x itself (post-norm) or LN(x) (pre-norm)."""
        return x if self.post_norm else self.ln1(x)

    def after_mix(self, x: Tensor, mixed: Tensor) -> Tensor:
        """The rest of the block, position by position: residual, LayerNorm, feed-forward."""
        if self.post_norm:
            x = self.ln1(x + self.drop(mixed))
            return self.ln2(x + self.drop(self.ff(x)))
        x = x + self.drop(mixed)
        return x + self.drop(self.ff(self.ln2(x)))


class AFTEncoder(nn.Module):
    sliced: Final[bool]  # a constant to TorchScript: other variants never compile _sliced_states

    def __init__(self, config: EncoderConfig):
        super().__init__()
        cfg = config
        self.config = cfg  # not seen by TorchScript; the scalars below are
        self.max_len = cfg.max_len
        self.cls_pooling = cfg.pooling == "cls"
        self.normalize = cfg.normalize
        self.has_head = cfg.num_labels > 0
        self.sliced = cfg.variant == "decay" and cfg.slice_tokens > 0
        self.slice_tokens = cfg.slice_tokens
        e = cfg.token_embedding_dim or cfg.d_model
        self.token_embedding = nn.Embedding(cfg.vocab_size, e)
        # Identity when not factorised, so the scripted graph has no optional submodule.
        self.token_projection = (
            nn.Linear(e, cfg.d_model, bias=False) if cfg.token_embedding_dim else nn.Identity()
        )
        self.ln_embed = (
            nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps) if cfg.embedding_norm else nn.Identity()
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        D = cfg.out_dim
        self.proj = nn.Linear(cfg.d_model, D) if D != cfg.d_model else nn.Identity()
        self.head = nn.Linear(D, cfg.num_labels) if self.has_head else nn.Identity()
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def token_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The final token states (B, T, d_model), after the last LayerNorm, before pooling."""
        B, T = input_ids.shape
        if T > self.max_len:
            raise ValueError("sequence longer than max_len")
        mask = attention_mask > 0
        x = self.drop(self.ln_embed(self.token_projection(self.token_embedding(input_ids))))
        if self.sliced:
            if T > self.slice_tokens:
                return self.ln_f(self._sliced_states(x, mask))
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def _sliced_states(self, x: Tensor, mask: Tensor) -> Tensor:
        """The blocks over a long sequence, slice by slice (AFT-decay only): each block first
        mixes every slice as far as it can alone (projections, its chunks' own sums), then
        carries the chunks' edge sums across slices and finishes each slice (output projection,
        feed-forward). Every step but the carries reads one slice, which fits in the cache; the
        whole-sequence pass streams each activation of T x d through memory several times."""
        T = x.shape[1]
        chunk = self.blocks[0].attn.chunk
        S = max(chunk, self.slice_tokens // chunk * chunk)
        starts = list(range(0, T, S))
        for block in self.blocks:
            queries: list[Tensor] = []
            parts: list[DecayPart] = []
            for s in starts:
                q, part = block.attn.begin(block.mix_input(x[:, s : s + S]), mask[:, s : s + S])
                queries.append(q)
                parts.append(part)
            carries = decay_carries(parts, chunk, block.attn.causal)
            slices: list[Tensor] = []
            for i, s in enumerate(starts):
                fwd, bwd = carries[i]
                mixed = block.attn.finish(queries[i], parts[i], fwd, bwd)
                slices.append(block.after_mix(x[:, s : s + S], mixed))
            x = torch.cat(slices, 1)
        return x

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        x = self.token_states(input_ids, attention_mask)
        return self._outputs(x, attention_mask > 0)

    def _outputs(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        B = x.shape[0]
        if self.cls_pooling:
            pooled = x[:, 0]
        else:  # masked_fill, not a product: padded rows may hold anything
            m = mask[:, :, None]
            pooled = x.masked_fill(~m, 0.0).sum(1) / m.sum(1).clamp_min(1).to(x.dtype)
        emb = self.proj(pooled)
        if self.has_head:
            logits = self.head(emb)
        else:
            logits = emb.new_zeros(B, 0)
        return emb, logits

    @torch.jit.export
    def embed_spans(
        self, input_ids: Tensor, attention_mask: Tensor, spans: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """forward's (embeddings, logits), plus one raw vector per row of spans (K, 3) =
        [row, start, end): the mean of that row's token states over positions [start, end),
        through the output projection, as forward pools a whole sequence (late chunking). Each
        span must hold at least one real token. Exact per span (no prefix sums), in O(K) small
        reductions over the one pass's states."""
        x = self.token_states(input_ids, attention_mask)
        emb, logits = self._outputs(x, attention_mask > 0)
        B, T, _ = x.shape
        pooled: list[Tensor] = []
        for k in range(spans.shape[0]):
            row, start, end = int(spans[k, 0]), int(spans[k, 1]), int(spans[k, 2])
            if row < 0 or row >= B or start < 0 or end > T or start >= end:
                raise ValueError("span outside its sequence")
            pooled.append(x[row, start:end].mean(0))
        if len(pooled) == 0:
            return emb, logits, emb.new_zeros(0, emb.shape[1])
        return emb, logits, self.proj(torch.stack(pooled))

    @torch.jit.export
    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Sentence embeddings, L2-normalised when config.normalize."""
        emb, _ = self.forward(input_ids, attention_mask)
        return F.normalize(emb, dim=-1) if self.normalize else emb
