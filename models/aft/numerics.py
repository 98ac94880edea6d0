"""Numerical helpers every AFT operation shares (aft.functional, aft.decay): per-dtype limits, a
floored exp, and the masks of real keys. TorchScript-compatible, as everything they serve."""

from typing import NamedTuple

import torch
from torch import Tensor


class Limits(NamedTuple):
    """Per-dtype thresholds. A sum whose terms cancel down to `cancel` times the sum of their
    magnitudes keeps a relative error of about 2e-8 (float64) or 2e-6 (float32): eps / cancel.
    `tiny` is the square root of the smallest normal: a sum of positive terms above it lost
    nothing to underflow that matters. `neg` is a huge negative stand-in for -inf."""

    cancel: float
    tiny: float
    neg: float


def limits(x: Tensor) -> Limits:
    if x.dtype == torch.float64:
        return Limits(1e-8, 1.4916681462400413e-154, -1e300)
    return Limits(0.06, 1.0842021724855044e-19, -1e37)


def exp_floored(x: Tensor) -> Tensor:
    """exp of arguments clamped at the bottom of the normal range (float32: exp(-87) ~ 1.6e-38).

    CPU exp is much slower on inputs whose result underflows to zero or a denormal
    (docs/MODEL_LIBRARY.md), and masked entries here are huge negatives. Every argument is
    already shifted so the largest term is 1, so the clamp moves a term by at most 1.6e-38
    (float64: exp(-700) ~ 1e-304) of the largest: far below what the sums resolve or the
    underflow checks test for."""
    lo = -700.0 if x.dtype == torch.float64 else -87.0
    return torch.exp(x.clamp_min(lo))


def real_keys(k: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """(B, T, 1) float mask of real keys."""
    if key_padding_mask is None:
        return torch.ones(k.shape[0], k.shape[1], 1, dtype=k.dtype, device=k.device)
    return key_padding_mask[:, : k.shape[1], None].to(k.dtype)


def has_key(mask: Tensor, causal: bool) -> Tensor:
    """(B, T or 1, 1) bool: does the row see at least one real key?"""
    if causal:
        return mask.cumsum(1) > 0
    return mask.sum(1, keepdim=True) > 0
