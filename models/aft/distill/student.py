"""The student: its shape (`student_config`, the command line's shape flags) and where its first
weights come from (the teacher's token vectors, or a trained student's weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aft.distill.teacher import MAX_SEQ_LEN, MiniLM
from aft.encoder import POSITION_TABLES, AFTEncoder, EncoderConfig

# The default student's shape, chosen by measurement (aft.distill.sizing, the model card).
SHAPE = {"d_model": 256, "n_layers": 6, "d_ff": 1024, "bias_rank": 64}


def student_config(variant: str, num_labels: int = 0, **kw) -> EncoderConfig:
    """The student's shape: the aft-mini shape of the variant comparison (d 256, 4 blocks,
    FFN 768) unless `kw` overrides it; only `variant` differs between the compared students."""
    base = dict(
        vocab_size=30522,
        d_model=256,
        n_layers=4,
        d_ff=768,
        max_len=MAX_SEQ_LEN,
        variant=variant,
        window=16,
        n_heads=8,
        kernel_size=15,
        bias_rank=64,
        pooling="mean",
        normalize=True,
        num_labels=num_labels,
        pad_token_id=0,
        embedding_dim=384,
        token_embedding_dim=None,
    )
    if variant == "conv":  # to_k is d x h, not d x d, and no position factors: widen the FFN
        base["d_ff"] = 956  # so that all variants hold the same number of parameters (+-0.1%)
    base.update(kw)
    return EncoderConfig(**base)


def shape_of(args) -> dict:
    """The shape overrides the command line asks for (--d-model, --layers, ...)."""
    shape = {
        "d_model": args.d_model,
        "n_layers": args.layers,
        "d_ff": args.d_ff,
        "bias_rank": args.bias_rank,
    }
    if args.token_dim:
        shape["token_embedding_dim"] = args.token_dim
    return shape


def model_max_len(args) -> int:
    """The student's max_len: the bundle's limit for variants without a position table."""
    if args.max_seq_len and args.variant in POSITION_TABLES:
        raise SystemExit(f"--max-seq-len: variant {args.variant!r} learns a bias for "
                         f"{MAX_SEQ_LEN} positions and cannot run longer")  # fmt: skip
    return args.max_seq_len or MAX_SEQ_LEN


def init_from_teacher(model: AFTEncoder, table: Path) -> None:
    """Start the student as a bag of teacher token vectors.

    Token embeddings := the principal coordinates of `table` (the teacher's embedding of each
    vocabulary token alone, from `aft.distill.embed`; the teacher's input word embeddings if
    absent), scaled to unit variance so the randomly initialised blocks only perturb them; the
    output projection maps them back to the teacher's 384-d space (principal axes + mean).
    Averaged over a sentence this already approximates the teacher, so training refines context
    instead of learning 30k token vectors from ~10k sentences.
    """
    if table.exists():
        w = torch.from_numpy(np.load(table)).double()
    else:
        w = MiniLM().word_embeddings().double()
    k = model.token_embedding.weight.shape[1]
    mu = w.mean(0)
    _, _, v = torch.linalg.svd(w - mu, full_matrices=False)
    pcs = (w - mu) @ v[:k].T
    scale = 1.0 / pcs.std()
    pcs = pcs * scale
    with torch.no_grad():
        model.token_embedding.weight.copy_(pcs.float())
        if isinstance(model.proj, torch.nn.Linear) and model.proj.weight.shape == (w.shape[1], k):
            # ln_f leaves each token at unit variance: put the mean back at that scale.
            sigma = pcs.std(1).median()
            model.proj.weight.copy_(v[:k].T.float())
            model.proj.bias.copy_((mu * scale / sigma).float())


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """float32 weights of a student: a training file (student.pt, model.pt, checkpoint.pt) or a
    bundle's TorchScript model.pt (float16 there)."""
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError:  # not TorchScript: a pickled training file
        ck = torch.load(path, weights_only=False)
        return ck["state_dict"] if "state_dict" in ck else ck["model"]
    return {k: v.float() for k, v in scripted.state_dict().items()}


def init_from_student(model: AFTEncoder, path: Path) -> dict[str, int]:
    """Copy a trained student's weights into `model` wherever name and shape agree. Blocks the
    source does not have start as the identity (their attention and feed-forward outputs are
    zero), so the warm-started model computes what the source did, but for the tensors that
    differ (a position table the new variant has not): training only has to learn those."""
    source = load_weights(path)
    own = model.state_dict()
    copied = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(copied, strict=False)
    depth = 1 + max((int(k.split(".")[1]) for k in source if k.startswith("blocks.")), default=-1)
    with torch.no_grad():
        for block in model.blocks[depth:]:
            for layer in (block.attn.out, block.ff[2]):
                layer.weight.zero_()
                layer.bias.zero_()
    left = sorted(set(own) - set(copied))
    print(f"--init-from {path}: {len(copied)} tensors copied, {len(left)} new "
          f"({', '.join(left[:6])}{' ...' if len(left) > 6 else ''})", flush=True)  # fmt: skip
    return {"copied": len(copied), "new": len(left), "source_blocks": depth}
