"""The linear head: multinomial logistic regression on the encoder's raw pooled embeddings.

The features are standardised for the fit (L-BFGS converges far better on them), and the
standardisation is then folded into the weights, so the head is one Linear layer on the raw
embeddings: exactly the `head` the encoder (and its TorchScript export) applies.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from aft.head.metrics import score

# Candidate L2 strengths (per-row mean loss + l2/2 * |W|^2 on standardised features), strongest
# first: each fit starts from the previous one's solution, which converges fastest this way.
L2_GRID = (1.0, 0.3, 0.1, 0.03, 0.01)
DEFAULT_L2 = 0.1
MAX_ITER = 300


@dataclass(frozen=True)
class LinearHead:
    weight: torch.Tensor  # (C, D), applied to raw embeddings
    bias: torch.Tensor  # (C,)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias

    def stored_as(self, dtype: torch.dtype) -> LinearHead:
        """The head as the bundle will hold it (e.g. rounded to float16), back in float32."""
        return LinearHead(self.weight.to(dtype).float(), self.bias.to(dtype).float())


def class_weights(y: torch.Tensor, num_labels: int, mode: str) -> torch.Tensor | None:
    """None, or 'balanced' weights n / (C * n_c): each label counts as much in the loss."""
    if mode == "none":
        return None
    if mode != "balanced":
        raise ValueError(f"class weighting {mode!r}")
    counts = torch.bincount(y, minlength=num_labels).float()
    return (len(y) / (num_labels * counts.clamp_min(1))).float()


@contextlib.contextmanager
def one_thread():
    """The head's matrices are small: one thread beats several (no sync), and on a busy
    machine several threads spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Standardized:
    """Features scaled to zero mean and unit variance per dimension (on the fitting rows)."""

    def __init__(self, x: torch.Tensor):
        self.mu = x.mean(0)
        sd = x.std(0) if len(x) > 1 else torch.ones(x.shape[1])
        # A dimension that barely varies in the training rows is not scaled up past a tenth of
        # the typical one: otherwise its folded raw weight is huge (1/sd) and magnifies the
        # slightest change of that dimension (other texts, fine-tuning) into wild logits.
        self.sd = sd.clamp_min(max(1e-6, 0.1 * sd.median().item()))
        self.z = (x - self.mu) / self.sd

    def fit(
        self,
        y: torch.Tensor,
        num_labels: int,
        l2: float,
        weight: torch.Tensor | None = None,
        init: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L-BFGS on cross-entropy + L2; (w, b) in standardised space."""
        if init is None:
            w = torch.zeros(num_labels, self.z.shape[1])
            b = torch.zeros(num_labels)
        else:
            w, b = (t.clone() for t in init)
        w.requires_grad_(True)
        b.requires_grad_(True)
        opt = torch.optim.LBFGS(
            [w, b], lr=1.0, max_iter=MAX_ITER, history_size=20, line_search_fn="strong_wolfe"
        )
        z = self.z

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(z @ w.T + b, y, weight=weight) + 0.5 * l2 * (w * w).sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        return w.detach(), b.detach()

    def head(self, w: torch.Tensor, b: torch.Tensor) -> LinearHead:
        """Fold the standardisation into the weights: one Linear on raw embeddings."""
        w_raw = w / self.sd
        return LinearHead(w_raw.clone(), (b - w_raw @ self.mu).clone())


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    num_labels: int,
    l2: float,
    weight: torch.Tensor | None = None,
) -> LinearHead:
    with one_thread():
        std = Standardized(x)
        return std.head(*std.fit(y, num_labels, l2, weight))


def choose_l2(
    x_fit: torch.Tensor,
    y_fit: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    labels: list[str],
    weight_mode: str,
) -> tuple[float, list[tuple[float, float]]]:
    """The grid's L2 with the best validation macro-F1 (ties: the stronger one), and the grid."""
    std = Standardized(x_fit)
    weight = class_weights(y_fit, len(labels), weight_mode)
    tried, params = [], None
    with one_thread():
        for l2 in L2_GRID:
            params = std.fit(y_fit, len(labels), l2, weight, init=params)
            pred = std.head(*params).logits(x_val).argmax(-1)
            tried.append((l2, score(y_val, pred, labels).macro_f1))
    best = max(tried, key=lambda t: (round(t[1], 6), t[0]))[0]
    return best, tried
