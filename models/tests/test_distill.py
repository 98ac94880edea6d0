"""Distillation pieces that need neither WordNet nor the teacher wheel: split, parsing, loss."""

import os
import subprocess
import sys

import torch
import torch.nn.functional as F
from aft.distill import corpus
from aft.distill.train import distill_loss, student_config


def test_split_is_deterministic_and_about_ten_percent():
    groups = [f"n:{i:08d}" for i in range(20000)]
    held = [g for g in groups if corpus.is_heldout(g)]
    # Another interpreter with another string-hash seed (Python's hash() would differ) agrees.
    script = (
        "import sys; from aft.distill import corpus; "
        "print(*[g for g in sys.stdin.read().split() if corpus.is_heldout(g)])"
    )
    other = subprocess.run(
        [sys.executable, "-c", script],
        input="\n".join(groups),
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.split() == held
    # Pinned: aft-mini's held-out metrics were measured on this split; a new hash would move it.
    assert len(held) == 1957 and held[:3] == ["n:00000011", "n:00000017", "n:00000021"]
    assert 0.08 < len(held) / len(groups) < 0.12


def test_lexnames_are_the_45_wordnet_files():
    assert len(corpus.LEXNAMES) == 45
    assert corpus.LEXNAMES[5] == "noun.animal" and corpus.LEXNAMES[44] == "adj.ppl"


# WordNet parsing: tests/test_corpus.py (test_wordnet_line_parsing).


def test_distill_loss_is_zero_at_the_teacher():
    t = F.normalize(torch.randn(8, 384), dim=-1)
    assert distill_loss(3.0 * t, t, 2.0).abs() < 1e-5
    assert distill_loss(torch.randn(8, 384), t, 2.0) > 0.1


def test_variants_hold_equal_parameters():
    from aft.encoder import AFTEncoder

    counts = [
        sum(p.numel() for p in AFTEncoder(student_config(v)).parameters())
        for v in ("full", "local", "conv")
    ]
    assert max(counts) - min(counts) < 0.001 * max(counts)
