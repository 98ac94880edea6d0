"""AFT layers: projections around the functional core, plus the learned position biases.

Each layer maps x (B, T, d_model) and an optional key mask (B, T, bool, True = real token) to
(B, T, d_model). All are scriptable.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from aft.decay import Carry, DecayPart, decay_finish, decay_part
from aft.functional import aft_conv, aft_decay, aft_full, aft_local, aft_simple


class _AFTLayer(nn.Module):
    """The linear q, k, v and output projections every layer puts around its AFT operation."""

    def __init__(self, d_model: int, key_dim: int, causal: bool):
        super().__init__()
        self.causal = causal
        self.to_q = nn.Linear(d_model, d_model)
        self.to_k = nn.Linear(d_model, key_dim)
        self.to_v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.to_q(x), self.to_k(x), self.to_v(x)


class AFTFull(_AFTLayer):
    """AFT-full with a factorised position bias w = u v^T, u and v of shape (max_len, rank)."""

    def __init__(self, d_model: int, max_len: int, bias_rank: int = 64, causal: bool = False):
        super().__init__(d_model, d_model, causal)
        # Small random (not zero) so both factors get gradients from the start.
        self.pos_u = nn.Parameter(torch.randn(max_len, bias_rank) * 0.02)
        self.pos_v = nn.Parameter(torch.randn(max_len, bias_rank) * 0.02)

    def bias(self, T: int) -> Tensor:
        return self.pos_u[:T] @ self.pos_v[:T].t()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv(x)
        y = aft_full(q, k, v, self.bias(x.shape[1]), mask, self.causal)
        return self.out(y)


class AFTLocal(AFTFull):
    """AFT-local: the AFT-full bias kept only where |t - t'| < window (0 outside)."""

    def __init__(
        self, d_model: int, max_len: int, window: int, bias_rank: int = 64, causal: bool = False
    ):
        super().__init__(d_model, max_len, bias_rank, causal)
        self.window = window

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv(x)
        y = aft_local(q, k, v, self.bias(x.shape[1]), self.window, mask, self.causal)
        return self.out(y)


class AFTSimple(_AFTLayer):
    """AFT-simple: no position bias; a softmax over time of the keys weights the values."""

    def __init__(self, d_model: int, causal: bool = False):
        super().__init__(d_model, d_model, causal)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv(x)
        return self.out(aft_simple(q, k, v, mask, self.causal))


class AFTConv(_AFTLayer):
    """AFT-conv: h heads, one key scalar per head, a 1-D kernel of odd size per head.

    The kernel is re-parameterised as in the paper, w = gamma (w - mean) / std + beta per head,
    which keeps exp(w) in a sane range whatever the raw weights do.
    """

    def __init__(self, d_model: int, n_heads: int, kernel_size: int, causal: bool = False):
        if d_model % n_heads != 0 or kernel_size % 2 != 1:
            raise ValueError("AFTConv needs d_model % n_heads == 0 and an odd kernel_size")
        super().__init__(d_model, n_heads, causal)  # one key scalar per head
        self.kernel = nn.Parameter(torch.randn(n_heads, kernel_size))
        self.gamma = nn.Parameter(torch.ones(n_heads, 1))
        self.beta = nn.Parameter(torch.zeros(n_heads, 1))

    def bias(self) -> Tensor:
        w = self.kernel
        w = (w - w.mean(1, keepdim=True)) / (w.std(1, keepdim=True) + 1e-5)
        return self.gamma * w + self.beta

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv(x)
        return self.out(aft_conv(q, k, v, self.bias(), mask, self.causal))


class AFTDecay(_AFTLayer):
    """AFT-decay: h heads, bias w[t, t'] = -lambda_h |t - t'|, no position table, so any length.

    lambda_h = softplus(decay_h) > 0, learned. It starts geometrically spaced from 1/2 (a reach
    of a few tokens) down to 2^-10 (about a thousand), as ALiBi spaces its slopes, so that some
    heads look near and some far from the first step.

    Chunks of 128 (aft_decay's default is 64): most sentences then fit one chunk and skip the
    cross-chunk scans, which is faster on sentence-length inputs (the measurement:
    docs/MODEL_LIBRARY.md, AFT-decay).
    """

    def __init__(self, d_model: int, n_heads: int, causal: bool = False, chunk: int = 128):
        if d_model % n_heads != 0:
            raise ValueError("AFTDecay needs d_model % n_heads == 0")
        super().__init__(d_model, d_model, causal)
        self.chunk = chunk
        rates = torch.logspace(-1.0, -10.0, n_heads, base=2.0)
        self.decay = nn.Parameter(torch.log(torch.expm1(rates)))  # softplus^-1

    def rates(self) -> Tensor:
        return F.softplus(self.decay)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        q, k, v = self.qkv(x)
        return self.out(aft_decay(q, k, v, self.rates(), mask, self.causal, True, self.chunk))

    def begin(self, x: Tensor, mask: Tensor) -> tuple[Tensor, DecayPart]:
        """The first half of forward on one slice of a long sequence (aft.decay.decay_part):
        the queries and the slice's part; `finish` completes it once every slice's carries
        are known."""
        q, k, v = self.qkv(x)
        return q, decay_part(k, v, self.rates(), mask, self.causal, self.chunk, False)

    def finish(self, q: Tensor, part: DecayPart, fwd: Carry, bwd: Carry) -> Tensor:
        return self.out(decay_finish(q, part, fwd, bwd, True, self.causal, True))
