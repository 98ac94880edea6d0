"""The AFT encoder a BERT converts into, and its initialisation from the BERT's weights.

Same width, depth, feed-forward and vocabulary; post-LayerNorm blocks as in BERT; each attention
replaced by AFT-decay (aft.modules.AFTDecay). What has no counterpart is folded in or dropped:
the token-type embedding (always type 0) and the mean of the first position embeddings are added
to every token's embedding; the position embeddings themselves are dropped (the decay bias
carries order, at any length).

The mixer starts as the attention it replaces would be with one average query per head: every
channel of BERT head h gets the key logit q_h . k_t' / sqrt(d_h) of that average query
(`mean_query_keys`), so exp(K) weighs the values as that query's softmax would; the gate
sigmoid(Q) starts flat (GATE0) with the output projection scaled to compensate; value and output
projections are the BERT's. Stage 1 (`aft.convert.stages`) then learns the real gate, keys and
decay rates.
"""

from __future__ import annotations

import math

import torch

from aft.convert.source import SourceModel
from aft.distill.teacher import LayerTrace, MiniLM
from aft.encoder import AFTEncoder, EncoderConfig

# The gate's starting bias: sigmoid(2) = 0.88, flat but not saturated, so it still learns.
GATE_BIAS = 2.0
# Position embeddings averaged into the token table: the training texts' lengths (<= 128 tokens).
POSITION_SPAN = 128


def decay_rates(heads: int, fastest: float = 1.0, slowest: float = 2.0**-8) -> torch.Tensor:
    """Geometric rates from a reach of one token (fastest) to a few hundred (slowest)."""
    return torch.logspace(math.log2(fastest), math.log2(slowest), heads, base=2.0)


def converted_config(src: SourceModel, heads: int, max_len: int) -> EncoderConfig:
    c = src.config
    return EncoderConfig(
        vocab_size=int(c["vocab_size"]),
        d_model=int(c["hidden_size"]),
        n_layers=int(c["num_hidden_layers"]),
        d_ff=int(c["intermediate_size"]),
        max_len=max_len,
        variant="decay",
        n_heads=heads,
        pooling=src.pooling,
        normalize=src.normalize,
        pad_token_id=int(c.get("pad_token_id", 0)),
        norm="post",
        embedding_norm=True,
        norm_eps=float(c.get("layer_norm_eps", 1e-12)),
    )


def mean_query_keys(
    teacher: MiniLM, layer: int, mean_input: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (d, d), bias (d,)) of a key projection whose channel c holds BERT head h(c)'s
    attention logit for the average query: K_t'c = q_h . k_h(x_t') / sqrt(d_h)."""
    pre = f"encoder.layer.{layer}.attention.self."
    wq, bq = teacher.weight(pre + "query.weight"), teacher.weight(pre + "query.bias")
    wk, bk = teacher.weight(pre + "key.weight"), teacher.weight(pre + "key.bias")
    d, h = wq.shape[0], teacher.n_heads
    dh = d // h
    q = (wq @ mean_input + bq).view(h, dh)  # the average query, per head
    w = torch.einsum("hc,hcd->hd", q, wk.view(h, dh, -1)) / math.sqrt(dh)  # (h, d_in)
    b = (q * bk.view(h, dh)).sum(1) / math.sqrt(dh)  # (h,)
    return w.repeat_interleave(dh, 0), b.repeat_interleave(dh)


def layer_means(trace: LayerTrace, mask: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's mean input hidden state over the real tokens of a batch."""
    m = mask[:, :, None].float()
    return [(x.float() * m).sum((0, 1)) / m.sum() for x in trace.inputs]


@torch.no_grad()
def convert(src: SourceModel, teacher: MiniLM, heads: int, max_len: int, means) -> AFTEncoder:
    """The AFT encoder initialised from the teacher's weights; `means` from `layer_means`."""
    model = AFTEncoder(converted_config(src, heads, max_len))
    t = teacher.weight
    emb = t("embeddings.word_embeddings.weight") + t("embeddings.token_type_embeddings.weight")[0]
    emb = emb + t("embeddings.position_embeddings.weight")[:POSITION_SPAN].mean(0)
    model.token_embedding.weight.copy_(emb)
    model.ln_embed.weight.copy_(t("embeddings.LayerNorm.weight"))
    model.ln_embed.bias.copy_(t("embeddings.LayerNorm.bias"))
    gate0 = torch.sigmoid(torch.tensor(GATE_BIAS))
    for i, block in enumerate(model.blocks):
        pre = f"encoder.layer.{i}."

        def copy(layer: torch.nn.Module, name: str, scale: float = 1.0, pre: str = pre) -> None:
            layer.weight.copy_(t(pre + name + ".weight") * scale)
            layer.bias.copy_(t(pre + name + ".bias"))

        attn = block.attn
        attn.to_q.weight.zero_()
        attn.to_q.bias.fill_(GATE_BIAS)
        wk, bk = mean_query_keys(teacher, i, means[i])
        attn.to_k.weight.copy_(wk)
        attn.to_k.bias.copy_(bk)
        copy(attn.to_v, "attention.self.value")
        copy(attn.out, "attention.output.dense", 1.0 / float(gate0))
        attn.decay.copy_(torch.log(torch.expm1(decay_rates(heads))))  # softplus^-1
        copy(block.ln1, "attention.output.LayerNorm")
        copy(block.ff[0], "intermediate.dense")
        copy(block.ff[2], "output.dense")
        copy(block.ln2, "output.LayerNorm")
    return model


def layer_outputs(model: AFTEncoder, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Each block's output hidden states (B, T, d): what the teacher's layers are compared with
    (AFTEncoder.token_states keeps only the last, as the service needs)."""
    real = mask > 0
    x = model.drop(model.ln_embed(model.token_projection(model.token_embedding(ids))))
    states = []
    for block in model.blocks:
        x = block(x, real)
        states.append(x)
    return states
