"""Attention Free Transformer operations (Zhai et al., 2021), one function per variant.

Every variant computes, for each position t and channel c,

    Y_t = sigmoid(Q_t) * sum_t' exp(K_t' + w[t,t']) V_t' / sum_t' exp(K_t' + w[t,t'])

with the sums over the allowed keys t': real tokens (`key_padding_mask` True) and, when `causal`,
t' <= t. Rows with no allowed key give 0.

Numerics: exponentials are taken of keys minus their maximum and of biases minus the row's
maximum; the maxima cancel in the ratio (so they are detached). Where the fast form still
underflows (keys and biases both extreme and peaking at different t') or cancels (local/conv add
exp(w) - 1 < 0 to a global sum), the affected rows are recomputed exactly by a streaming
log-sum-exp over blocks of keys (`_exact`). Pass `fallback=False` to see the fast form alone.

AFT-decay (any length, in chunks) lives in aft.decay and is exported here with the others; the
numerical helpers they share are in aft.numerics.

Everything here is TorchScript-compatible: the encoder scripts these functions into model.pt.
"""

from typing import NamedTuple

import torch
from torch import Tensor

from aft.decay import DecayState, aft_decay, aft_decay_step, decay_state
from aft.numerics import exp_floored, has_key, limits, real_keys

__all__ = [
    "DENSE_MAX",
    "DecayState",
    "aft_conv",
    "aft_decay",
    "aft_decay_step",
    "aft_full",
    "aft_local",
    "aft_simple",
    "decay_state",
]

# Up to this length, local and conv run as dense (banded) bias matrices through AFT-full's matrix
# products: on CPU a few BLAS calls beat the band path's small per-offset steps at short T.
DENSE_MAX = 256


class _Operands(NamedTuple):
    """A biased variant's inputs, prepared once for its fast path and the exact fallback."""

    k: Tensor  # (B, T, d); conv: each head's key repeated over its channels
    v: Tensor  # (B, T, d)
    mask: Tensor  # (B, T, 1) float, 1 on real keys
    km: Tensor  # k with padded keys set to a huge negative
    causal: bool
    kind: str  # the bias's form, as `_bias` reads it: "full", "local" or "conv"
    w: Tensor  # full, local: (T, T); conv: (d, S), each head's kernel repeated over its channels
    window: int  # local: bias kept where |t - t'| < window


def _operands(
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None,
    causal: bool,
    kind: str,
    w: Tensor,
    window: int,
) -> _Operands:
    mask = real_keys(k, key_padding_mask)
    km = k.masked_fill(mask == 0, limits(k).neg)
    return _Operands(k, v, mask, km, causal, kind, w, window)


def _global_sums(
    km: Tensor, v: Tensor, mask: Tensor, causal: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """m, sum_t' exp(K_t' - m_t) V_t' and sum_t' exp(K_t' - m_t) over allowed t'.

    m_t is the largest allowed key (global, or running when causal), so the denominator is >= 1
    wherever a key is allowed. km is K with padded keys set to a huge negative number.
    """
    if not causal:
        m = km.amax(1, keepdim=True).detach()
        e = exp_floored(km - m) * mask
        return m, (e * v).sum(1, keepdim=True), e.sum(1, keepdim=True)
    # Causal: a prefix log-sum-exp keeps every prefix exact. V's sign is split off first.
    lim = limits(km)
    m = torch.cummax(km, 1)[0].detach()
    lv = torch.log(v.abs().clamp_min(lim.tiny * lim.tiny))
    pos = torch.logcumsumexp(km + torch.where(v > 0, lv, lim.neg), 1)
    negs = torch.logcumsumexp(km + torch.where(v < 0, lv, lim.neg), 1)
    num = exp_floored(pos - m) - exp_floored(negs - m)
    den = exp_floored(torch.logcumsumexp(km, 1) - m)
    has = has_key(mask, True)
    return m, num * has, den * has


def _rows(x: Tensor, r0: int, r1: int) -> Tensor:
    """Rows r0:r1 of a (B, T or 1, C) tensor (a size-1 row dim broadcasts)."""
    return x if x.shape[1] == 1 else x[:, r0:r1]


def _bias(w: Tensor, kind: str, window: int, t: Tensor, j0: int, j1: int) -> Tensor:
    """Bias w[t, j0:j1] of rows t, shaped (R, j1 - j0, 1 or d), for the exact path."""
    tk = torch.arange(j0, j1, device=t.device)
    if kind == "full":
        return w[t, j0:j1][:, :, None]
    if kind == "local":
        near = (tk[None, :] - t[:, None]).abs() < window
        return torch.where(near, w[t, j0:j1], 0.0)[:, :, None]
    if kind == "conv":  # w: (d, S) per-channel kernel, tap j = t' - t + S // 2
        s = w.shape[1]
        off = tk[None, :] - t[:, None] + s // 2
        taps = w[:, off.clamp(0, s - 1)].permute(1, 2, 0)
        return torch.where(((off >= 0) & (off < s))[:, :, None], taps, 0.0)
    return torch.zeros(t.shape[0], j1 - j0, 1, dtype=w.dtype, device=w.device)


def _exact(ops: _Operands, b_idx: Tensor, t_idx: Tensor, block: int = 64) -> Tensor:
    """Exact rows (b_idx, t_idx) of the weighted average, by an online log-sum-exp.

    Works on `block` rows x `block` keys x d at a time, so memory stays bounded (never T x T x d).
    """
    k, v, mask = ops.k, ops.v, ops.mask
    neg = limits(k).neg
    T, d = k.shape[1], v.shape[2]
    outs = []
    for i in range(0, b_idx.shape[0], block):
        b, t = b_idx[i : i + block], t_idx[i : i + block]
        mx = torch.full((b.shape[0], d), neg, dtype=k.dtype, device=k.device)
        num = torch.zeros(b.shape[0], d, dtype=v.dtype, device=v.device)
        den = torch.zeros_like(num)
        for j0 in range(0, T, block):
            j1 = min(T, j0 + block)
            ok = mask[:, j0:j1, 0][b] > 0
            if ops.causal:
                ok = ok & (torch.arange(j0, j1, device=k.device)[None, :] <= t[:, None])
            ok = ok[:, :, None]
            bias = _bias(ops.w, ops.kind, ops.window, t, j0, j1)
            logit = (k[:, j0:j1][b] + bias).masked_fill(~ok, neg)
            new = torch.maximum(mx, logit.amax(1).detach())
            p = torch.exp(logit - new[:, None]) * ok
            scale = torch.exp(mx - new)
            num = num * scale + (p * v[:, j0:j1][b]).sum(1)
            den = den * scale + p.sum(1)
            mx = new
        outs.append(num / torch.where(den > 0, den, 1.0))
    return torch.cat(outs) if len(outs) > 0 else v.new_zeros(0, d)


def _finish(
    q: Tensor, ops: _Operands, num: Tensor, den: Tensor, suspect: Tensor, fallback: bool
) -> Tensor:
    """sigmoid(Q) * num / den, 0 on rows without keys; rows where any channel is `suspect`
    (B, T, d: the fast form may have underflowed or cancelled) are recomputed by `_exact`."""
    has = has_key(ops.mask, ops.causal)
    if not fallback:
        return torch.sigmoid(q) * torch.where(has, num / den, 0.0)  # the fast form, NaN and all
    bad = suspect.any(-1) & has[:, :, 0]
    ok = has.expand_as(den) & ~bad[:, :, None]
    y = torch.where(ok, num / torch.where(ok, den, 1.0), 0.0)
    if bool(bad.any()):
        rows = bad.nonzero()
        b_idx, t_idx = rows[:, 0], rows[:, 1]
        y[b_idx, t_idx] = _exact(ops, b_idx, t_idx)
    return torch.sigmoid(q) * y


def _aft_dense(q: Tensor, ops: _Operands, wh: Tensor, fallback: bool, block: int) -> Tensor:
    """AFT with a dense bias wh: (h, T, T), one matrix per group of d / h channels (h = 1: one
    for all). exp(wh) times exp(K) V, `block` rows of wh at a time: O(T^2 d) time, O(h block T +
    T d) extra memory (never T x T x d). Every term is positive, so only underflow loses accuracy;
    flagged rows go to the exact path with the variant's own bias (`ops.kind`, `ops.w`)."""
    B, T, d = ops.v.shape
    h = wh.shape[0]
    g = d // h
    lim = limits(ops.k)
    km = ops.km
    ek = exp_floored(km - km.amax(1, keepdim=True).detach()) * ops.mask
    # (B, h, T', g): each head's channels, so that one batched matmul serves every head.
    ekv = (ek * ops.v).reshape(B, T, h, g).transpose(1, 2)
    ekh = ek.reshape(B, T, h, g).transpose(1, 2)
    idx = torch.arange(T, device=km.device)
    nums: list[Tensor] = []
    dens: list[Tensor] = []
    for r0 in range(0, T, block):
        r1 = min(T, r0 + block)
        # exp(w) has no batch dimension: padded keys are already zero in ek, so the bias is
        # shifted by its row maximum over all keys (the shift cancels; a padded key holding the
        # maximum can only make real terms smaller, and underflow is caught below).
        ww = wh[:, r0:r1]  # (h, rows, T')
        if ops.causal:
            later = idx[None, :] > idx[r0:r1, None]
            ww = ww.masked_fill(later, lim.neg)
            ew = exp_floored(ww - ww.amax(-1, keepdim=True).detach()).masked_fill(later, 0.0)
        else:
            ew = exp_floored(ww - ww.amax(-1, keepdim=True).detach())
        nums.append(ew @ ekv)  # (h, rows, T') @ (B, h, T', g): broadcast over the batch
        dens.append(ew @ ekh)
    if len(nums) > 1:
        nums, dens = [torch.cat(nums, 2)], [torch.cat(dens, 2)]
    num = nums[0].transpose(1, 2).reshape(B, T, d)
    den = dens[0].transpose(1, 2).reshape(B, T, d)
    return _finish(q, ops, num, den, den < lim.tiny, fallback)


def aft_full(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    w: Tensor,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    fallback: bool = True,
    block: int = 256,
) -> Tensor:
    """AFT-full. q, k, v: (B, T, d); w: (T, T) or larger (sliced). O(T^2 d) time: exp(w) (T x T)
    times exp(K) V (T x d), taken `block` rows of w at a time, so the extra memory is
    O(block T + T d) (w itself, an input, is T x T)."""
    T = q.shape[1]
    w = w[:T, :T]
    ops = _operands(k, v, key_padding_mask, causal, "full", w, 0)
    return _aft_dense(q, ops, w[None], fallback, block)


def _aft_band(q: Tensor, ops: _Operands, fallback: bool) -> Tensor:
    """AFT with a bias that is zero beyond a band of offsets t' - t (local and conv).

    The paper's rewriting: exp(w) = 1 + (exp(w) - 1), so the answer is the global (simple) sum plus
    a correction over the band only. O(T * band * d) time, O(T d) memory.
    local: w (T, T), band |t' - t| < window; conv: w (d, S), bias of t' is w[:, t' - t + S // 2].
    """
    v, mask, km, w, causal = ops.v, ops.mask, ops.km, ops.w, ops.causal
    local = ops.kind == "local"
    B, T, d = v.shape
    lim = limits(ops.k)
    m, g_num, g_den = _global_sums(km, v, mask, causal)
    half = ops.window - 1 if local else w.shape[1] // 2
    offsets: list[int] = []
    for o in range(-half, half + 1):
        if abs(o) < T and not (causal and o > 0):
            offsets.append(o)

    # Bias maximum (at least 0, the bias outside the band): per row over the taps on real keys
    # for local; per channel over the kernel for conv, the same for every row.
    wd = w.detach()
    if local:
        wm = torch.zeros(B, T, 1, dtype=v.dtype, device=v.device)
        for o in offsets:
            r0, r1 = max(0, -o), T - max(0, o)  # rows t whose key t + o exists
            cand = torch.where(mask[:, r0 + o : r1 + o] > 0, wd.diagonal(o)[:, None], lim.neg)
            wm[:, r0:r1] = torch.maximum(wm[:, r0:r1], cand)
    else:
        wm = wd.amax(1).clamp_min(0.0)[None, None, :]
    outside = exp_floored(-wm)  # weight of keys outside the band, relative to the maximum

    num = (outside * g_num).expand(B, T, d).contiguous()
    den = (outside * g_den).expand(B, T, d).contiguous()
    den_abs = den.detach().clone()  # sum of |terms|: measures cancellation
    # Without causal, one key reference m serves every row: exp(K - m) and exp(K - m) V once.
    ek = exp_floored(km - m) * mask
    ekv = ek * v
    for o in offsets:
        r0, r1, a, b = max(0, -o), T - max(0, o), max(0, o), T + min(0, o)  # rows, keys
        wo = w.diagonal(o)[:, None] if local else w[:, o + half]
        c = exp_floored(wo - _rows(wm, r0, r1)) - _rows(outside, r0, r1)  # exp(w) - 1, scaled
        if causal:  # the reference m_t differs per row: exp(K_t' - m_t) for this tap
            e = exp_floored(km[:, a:b] - m[:, r0:r1]) * mask[:, a:b]
            ev = e * v[:, a:b]
        else:
            e, ev = ek[:, a:b], ekv[:, a:b]
        num[:, r0:r1].addcmul_(c, ev)
        den[:, r0:r1].addcmul_(c, e)
        den_abs[:, r0:r1].addcmul_(c.detach().abs(), e.detach())

    # Flag underflow (tiny den) and cancellation (den much smaller than the sum of |terms|).
    suspect = (den < lim.tiny) | (den < lim.cancel * den_abs)
    return _finish(q, ops, num, den, suspect, fallback)


def aft_local(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    w: Tensor,
    window: int,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    fallback: bool = True,
    dense_max: int = DENSE_MAX,
) -> Tensor:
    """AFT-local: bias w[t, t'] where |t - t'| < window, 0 (not -inf) outside. w: (T, T) or larger.

    T > dense_max: only the 2 * window - 1 diagonals of w are read, O(T window d) time, O(T d)
    extra memory. Shorter inputs take AFT-full's matrix products over the banded bias instead,
    O(T^2 d) but a few large BLAS calls rather than one small step per diagonal."""
    T = q.shape[1]
    if window < 1:
        raise ValueError("window must be >= 1")
    if window >= T:  # the band covers everything
        return aft_full(q, k, v, w, key_padding_mask, causal, fallback)
    w = w[:T, :T]
    ops = _operands(k, v, key_padding_mask, causal, "local", w, window)
    if T <= dense_max:
        idx = torch.arange(T, device=w.device)
        near = (idx[None, :] - idx[:, None]).abs() < window
        return _aft_dense(q, ops, torch.where(near, w, 0.0)[None], fallback, 256)
    return _aft_band(q, ops, fallback)


def aft_simple(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
) -> Tensor:
    """AFT-simple: no position bias, so the weighted average is a (prefix) softmax over t' of K.

    O(T d) time and memory; exact without a fallback (the denominator is always >= 1)."""
    mask = real_keys(k, key_padding_mask)
    m, num, den = _global_sums(k.masked_fill(mask == 0, limits(k).neg), v, mask, causal)
    has = has_key(mask, causal)
    return torch.sigmoid(q) * torch.where(has, num / torch.where(has, den, 1.0), 0.0)


def aft_conv(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    w: Tensor,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    fallback: bool = True,
    dense_max: int = DENSE_MAX,
) -> Tensor:
    """AFT-conv with h heads. q, v: (B, T, d) in h groups of d / h channels; k: (B, T, h), one key
    per head; w: (h, S), S odd, a 1-D kernel per head: the bias of key t' for query t is
    w[head, t' - t + S // 2] within the kernel and 0 outside. `causal` keeps taps with t' <= t.

    T > dense_max: conv(exp(K) V, exp(w) - 1) + sum_t' exp(K_t') V_t' over the denominator with
    V = 1, the convolution written as a sum over the S taps: O(T S d) time, O(T d + h S) memory.
    Shorter inputs: one (T, T) banded bias per head through batched matrix products (as AFT-full),
    O(T^2 d) time, O(h T^2 + T d) memory."""
    d = q.shape[2]
    h, s = w.shape
    if d % h != 0 or s % 2 != 1 or k.shape[2] != h:
        raise ValueError("aft_conv needs d % h == 0, an odd kernel and k of shape (B, T, h)")
    g = d // h
    kd = k.repeat_interleave(g, 2)  # each head's key scalar, for each of its channels
    wd = w.repeat_interleave(g, 0)
    ops = _operands(kd, v, key_padding_mask, causal, "conv", wd, 0)
    T = q.shape[1]
    if T <= dense_max:  # one (T, T) bias matrix per head, zero beyond the kernel
        idx = torch.arange(T, device=w.device)
        off = idx[None, :] - idx[:, None] + s // 2
        inside = (off >= 0) & (off < s)
        wh = torch.where(inside[None], w[:, off.clamp(0, s - 1)], 0.0)
        return _aft_dense(q, ops, wh, fallback, 256)
    return _aft_band(q, ops, fallback)
