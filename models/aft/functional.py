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

Everything here is TorchScript-compatible: the encoder scripts these functions into model.pt.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# Up to this length, local and conv run as dense (banded) bias matrices through AFT-full's matrix
# products: on CPU a few BLAS calls beat the band path's small per-offset steps at short T.
DENSE_MAX = 256


class _Limits(NamedTuple):
    """Per-dtype thresholds. A sum whose terms cancel down to `cancel` times the sum of their
    magnitudes keeps a relative error of about 2e-8 (float64) or 2e-6 (float32): eps / cancel.
    `tiny` is the square root of the smallest normal: a sum of positive terms above it lost
    nothing to underflow that matters. `neg` is a huge negative stand-in for -inf."""

    cancel: float
    tiny: float
    neg: float


def _limits(x: Tensor) -> _Limits:
    if x.dtype == torch.float64:
        return _Limits(1e-8, 1.4916681462400413e-154, -1e300)
    return _Limits(0.06, 1.0842021724855044e-19, -1e37)


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


def _exp(x: Tensor) -> Tensor:
    """exp of arguments clamped at the bottom of the normal range (float32: exp(-87) ~ 1.6e-38).

    CPU exp is 6-16x slower on inputs whose result underflows to zero or a denormal, and masked
    entries here are huge negatives. Every argument is already shifted so the largest term is 1,
    so the clamp moves a term by at most 1.6e-38 (float64: exp(-700) ~ 1e-304) of the largest:
    far below what the sums resolve or the underflow checks test for."""
    lo = -700.0 if x.dtype == torch.float64 else -87.0
    return torch.exp(x.clamp_min(lo))


def _key_mask(k: Tensor, key_padding_mask: Tensor | None) -> Tensor:
    """(B, T, 1) float mask of real keys."""
    if key_padding_mask is None:
        return torch.ones(k.shape[0], k.shape[1], 1, dtype=k.dtype, device=k.device)
    return key_padding_mask[:, : k.shape[1], None].to(k.dtype)


def _operands(
    k: Tensor,
    v: Tensor,
    key_padding_mask: Tensor | None,
    causal: bool,
    kind: str,
    w: Tensor,
    window: int,
) -> _Operands:
    mask = _key_mask(k, key_padding_mask)
    km = k.masked_fill(mask == 0, _limits(k).neg)
    return _Operands(k, v, mask, km, causal, kind, w, window)


def _has_key(mask: Tensor, causal: bool) -> Tensor:
    """(B, T or 1, 1) bool: does the row see at least one real key?"""
    if causal:
        return mask.cumsum(1) > 0
    return mask.sum(1, keepdim=True) > 0


def _global_sums(
    km: Tensor, v: Tensor, mask: Tensor, causal: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """m, sum_t' exp(K_t' - m_t) V_t' and sum_t' exp(K_t' - m_t) over allowed t'.

    m_t is the largest allowed key (global, or running when causal), so the denominator is >= 1
    wherever a key is allowed. km is K with padded keys set to a huge negative number.
    """
    if not causal:
        m = km.amax(1, keepdim=True).detach()
        e = _exp(km - m) * mask
        return m, (e * v).sum(1, keepdim=True), e.sum(1, keepdim=True)
    # Causal: a prefix log-sum-exp keeps every prefix exact. V's sign is split off first.
    lim = _limits(km)
    m = torch.cummax(km, 1)[0].detach()
    lv = torch.log(v.abs().clamp_min(lim.tiny * lim.tiny))
    pos = torch.logcumsumexp(km + torch.where(v > 0, lv, lim.neg), 1)
    negs = torch.logcumsumexp(km + torch.where(v < 0, lv, lim.neg), 1)
    num = _exp(pos - m) - _exp(negs - m)
    den = _exp(torch.logcumsumexp(km, 1) - m)
    has = _has_key(mask, True)
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
    neg = _limits(k).neg
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
    has = _has_key(ops.mask, ops.causal)
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
    lim = _limits(ops.k)
    km = ops.km
    ek = _exp(km - km.amax(1, keepdim=True).detach()) * ops.mask
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
            ew = _exp(ww - ww.amax(-1, keepdim=True).detach()).masked_fill(later, 0.0)
        else:
            ew = _exp(ww - ww.amax(-1, keepdim=True).detach())
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
    lim = _limits(ops.k)
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
    outside = _exp(-wm)  # weight of keys outside the band, relative to the maximum

    num = (outside * g_num).expand(B, T, d).contiguous()
    den = (outside * g_den).expand(B, T, d).contiguous()
    den_abs = den.detach().clone()  # sum of |terms|: measures cancellation
    # Without causal, one key reference m serves every row: exp(K - m) and exp(K - m) V once.
    ek = _exp(km - m) * mask
    ekv = ek * v
    for o in offsets:
        r0, r1, a, b = max(0, -o), T - max(0, o), max(0, o), T + min(0, o)  # rows, keys
        wo = w.diagonal(o)[:, None] if local else w[:, o + half]
        c = _exp(wo - _rows(wm, r0, r1)) - _rows(outside, r0, r1)  # exp(w) - 1, scaled
        if causal:  # the reference m_t differs per row: exp(K_t' - m_t) for this tap
            e = _exp(km[:, a:b] - m[:, r0:r1]) * mask[:, a:b]
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
    mask = _key_mask(k, key_padding_mask)
    m, num, den = _global_sums(k.masked_fill(mask == 0, _limits(k).neg), v, mask, causal)
    has = _has_key(mask, causal)
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


# --- AFT-decay: w[t, t'] = -lambda_h |t - t'|: any length, linear time and memory -----------


class _Carry(NamedTuple):
    """Per chunk and channel, the keys beyond one edge of the chunk (all chunks before it, or all
    after it) as seen from that edge: weight sum exp(scale) and weighted average of V `avg`.
    `has` is 1 where there is any such key, else 0 (scale is then a huge negative, avg 0)."""

    scale: Tensor  # (B, n, d)
    avg: Tensor
    has: Tensor


def _carry(
    scale: Tensor, num: Tensor, den: Tensor, lam: Tensor, chunk: int, neg: float, reverse: bool
) -> _Carry:
    """Every chunk's carry from the chunks strictly before it (or, `reverse`, after it), given
    each chunk's own sums at that edge, exp(scale) [num, den] (B, n, d).

    Chunk c' adds exp(-lambda chunk |c - c'|) times its sums. With the global offset
    lambda chunk c' that is a cumulative log-sum-exp over chunks: exact whatever the scales. It
    runs in float64 (n x d values only) so the offset, up to lambda T, costs no precision; the
    sign of V's sums is split off first, as in `_global_sums`."""
    B, n, d = num.shape
    dtype = num.dtype
    off = torch.arange(n, device=lam.device, dtype=torch.float64)[:, None] * chunk * lam.double()
    u = scale.double() + (-off if reverse else off)
    num, den = num.double(), den.double()
    lnum = torch.log(num.abs().clamp_min(1e-300))
    logs = torch.cat(
        [
            u + torch.log(den.clamp_min(1e-300)),
            torch.where(num > 0, u + lnum, neg),
            torch.where(num < 0, u + lnum, neg),
        ],
        2,
    )
    if reverse:
        logs = torch.logcumsumexp(logs.flip(1), 1).flip(1)
    else:
        logs = torch.logcumsumexp(logs, 1)
    cden = logs[:, :, :d]
    avg = torch.exp(logs[:, :, d : 2 * d] - cden) - torch.exp(logs[:, :, 2 * d :] - cden)
    has = cden > 0.5 * neg
    scale = torch.where(has, cden + off if reverse else cden - off, neg).to(dtype)
    avg = torch.where(has, avg, 0.0).to(dtype)
    hasf = has.to(dtype)
    # Shift by one chunk: c takes the carry of c - 1 (forward) or c + 1 (reverse).
    none = torch.full((B, 1, d), neg, dtype=dtype, device=num.device)
    zero = torch.zeros(B, 1, d, dtype=dtype, device=num.device)
    if reverse:
        return _Carry(
            torch.cat([scale[:, 1:], none], 1),
            torch.cat([avg[:, 1:], zero], 1),
            torch.cat([hasf[:, 1:], zero], 1),
        )
    return _Carry(
        torch.cat([none, scale[:, :-1]], 1),
        torch.cat([zero, avg[:, :-1]], 1),
        torch.cat([zero, hasf[:, :-1]], 1),
    )


def _edge_sums(
    kc: Tensor, vc: Tensor, mc: Tensor, lam: Tensor, m: Tensor, num: Tensor, den: Tensor, edge: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Each chunk's sum_j exp(K_j - lambda |j - edge|) [V_j, 1] as exp(scale) [num, den].

    `num`, `den` come from the decay matrix's row `edge`, in units of exp(chunk max key) `m`.
    Where that den underflowed (keys and decay both extreme), the chunk is recomputed shifted by
    its own largest term, so that its den is >= 1."""
    lim = _limits(kc)
    weak = (den < lim.tiny) & (mc.sum(2) > 0)
    if not bool(weak.any()):
        return m, num, den
    idx = torch.arange(kc.shape[2], device=kc.device, dtype=kc.dtype)
    a = kc - lam * (idx - edge).abs()[:, None]  # padded keys stay huge negatives
    top = a.amax(2).detach()
    e = _exp(a - top[:, :, None]) * mc
    return (
        torch.where(weak, top, m),
        torch.where(weak, (e * vc).sum(2), num),
        torch.where(weak, e.sum(2), den),
    )


def _decay_exact(
    kc: Tensor,
    vc: Tensor,
    mc: Tensor,
    lam: Tensor,
    fwd: _Carry,
    bwd: _Carry,
    causal: bool,
    b_idx: Tensor,
    t_idx: Tensor,
    block: int = 64,
) -> Tensor:
    """Exact rows (b_idx, t_idx): the row's own chunk term by term in the log domain, plus the
    carries (exact already). O(chunk d) per row, `block` rows at a time."""
    neg = _limits(kc).neg
    C, d = kc.shape[2], kc.shape[3]
    idx = torch.arange(C, device=kc.device)
    outs: list[Tensor] = []
    for r in range(0, b_idx.shape[0], block):
        b, t = b_idx[r : r + block], t_idx[r : r + block]
        c, i = torch.div(t, C, rounding_mode="floor"), t % C
        rel = idx[None, :] - i[:, None]  # (R, C): j - i
        ok = mc[b, c] > 0  # (R, C, 1)
        if causal:
            ok = ok & (rel <= 0)[:, :, None]
        logit = (kc[b, c] - lam * rel.abs().to(kc.dtype)[:, :, None]).masked_fill(~ok, neg)
        sf = fwd.scale[b, c] - lam * (i + 1).to(kc.dtype)[:, None]
        sb = bwd.scale[b, c] - lam * (C - i).to(kc.dtype)[:, None]
        top = torch.maximum(logit.amax(1), sf)
        if not causal:
            top = torch.maximum(top, sb)
        top = top.detach()
        p = _exp(logit - top[:, None]) * ok
        pf = _exp(sf - top) * fwd.has[b, c]
        num = (p * vc[b, c]).sum(1) + pf * fwd.avg[b, c]
        den = p.sum(1) + pf
        if not causal:
            pb = _exp(sb - top) * bwd.has[b, c]
            num = num + pb * bwd.avg[b, c]
            den = den + pb
        outs.append(num / torch.where(den > 0, den, 1.0))
    return torch.cat(outs) if len(outs) > 0 else vc.new_zeros(0, d)


def aft_decay(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    decay: Tensor,
    key_padding_mask: Tensor | None = None,
    causal: bool = False,
    fallback: bool = True,
    chunk: int = 64,
) -> Tensor:
    """AFT-decay: the bias w[t, t'] = -lambda_h |t - t'|, one rate lambda_h >= 0 per head.

    q, k, v: (B, T, d) in h groups of d / h channels; decay: (h,) the rates (h = d: one per
    channel). Any length: O(T chunk d) time, O(T d) extra memory, no T x T anything.

    In chunks of `chunk` positions. Inside a chunk: one (chunk x chunk) matrix exp(-lambda |i - j|)
    per head times exp(K - chunk max) [V, 1], for every chunk of the batch in one batched matrix
    product. Across chunks: each chunk's sums seen from its two edges are carried forward and
    backward by a cumulative log-sum-exp over chunks (`_carry`, exact for any scale), and enter
    the same product as two more columns (decays exp(-lambda i), exp(-lambda (chunk - 1 - i))).
    A real row whose sum underflowed (keys spread by over ~40 inside its chunk, none near it) is
    recomputed exactly in the log domain (`_decay_exact`), O(chunk d) per row: linear even if
    every row falls back. Padded query rows are not recomputed: they give 0 where their fast form
    underflowed (nothing reads them: padded keys are masked everywhere). `causal` keeps t' <= t:
    the forward carry alone, the recurrence of `aft_decay_step`."""
    B, T, d = v.shape
    h = decay.shape[0]
    if decay.dim() != 1 or d % h != 0 or k.shape != v.shape or chunk < 1:
        raise ValueError(
            "aft_decay needs decay of shape (h,) with d % h == 0, k like v, chunk >= 1"
        )
    g = d // h
    lim = _limits(k)
    rates = decay.to(k.dtype)
    lam = rates.repeat_interleave(g)  # (d,)
    mask = _key_mask(k, key_padding_mask)
    C = min(chunk, T)
    n = (T + C - 1) // C
    pad = n * C - T
    km = k if key_padding_mask is None else k.masked_fill(mask == 0, lim.neg)
    vp, mp = v, mask
    if pad > 0:
        km = F.pad(km, (0, 0, 0, pad), value=lim.neg)
        vp, mp = F.pad(v, (0, 0, 0, pad)), F.pad(mask, (0, 0, 0, pad))
    kc, vc, mc = km.view(B, n, C, d), vp.view(B, n, C, d), mp.view(B, n, C, 1)

    # exp(K - chunk max) [V, 1], laid out (h, C, B, n, 2, g) for one product per head.
    m = kc.amax(2).detach()  # (B, n, d); a huge negative in chunks without keys
    e = _exp(kc - m[:, :, None])
    if key_padding_mask is not None or pad > 0:
        e = e * mc
    x = torch.empty(h, C, B, n, 2, g, dtype=k.dtype, device=k.device)
    xs = x.permute(2, 3, 1, 0, 4, 5)  # (B, n, C, h, 2, g) view
    xs.select(4, 0).copy_((e * vc).view(B, n, C, h, g))
    xs.select(4, 1).copy_(e.view(B, n, C, h, g))
    x = x.view(h, C, B * n * 2 * g)

    # Decay matrices; plain exp (small tensors): far entries underflow to exactly 0.
    idx = torch.arange(C, device=k.device)
    rel = idx[:, None] - idx[None, :]  # i - j
    w = torch.exp(-rates[:, None, None] * rel.abs().to(k.dtype))  # (h, C, C)
    if causal:
        w = w.masked_fill(rel[None] < 0, 0.0)

    if n == 1:  # one chunk (every sentence): nothing to carry, skip the edge sums and scans
        nothing = torch.zeros_like(m)
        fwd = _Carry(torch.full_like(m, lim.neg), nothing, nothing)
        bwd = fwd
    else:  # every chunk's sums at its last row (forward) and first row (backward), then carries
        edges = torch.bmm(torch.stack([w[:, C - 1], w[:, 0]], 1), x)  # (h, 2, B * n * 2 * g)
        edges = edges.view(h, 2, B, n, 2, g).permute(1, 4, 2, 3, 0, 5).reshape(2, 2, B, n, d)
        s, sn, sd = _edge_sums(kc, vc, mc, lam, m, edges[0, 0], edges[0, 1], C - 1)
        fwd = _carry(s, sn, sd, lam, C, lim.neg, False)
        bwd = fwd  # unused when causal
        if not causal:
            s, sn, sd = _edge_sums(kc, vc, mc, lam, m, edges[1, 0], edges[1, 1], 0)
            bwd = _carry(s, sn, sd, lam, C, lim.neg, True)

    y = torch.bmm(w, x)
    if n > 1:
        # One shift per chunk and channel: the chunk max, raised where a carry would outweigh it
        # by more than exp(margin) (so nothing overflows); rows that end up below `tiny` fall back.
        margin = 200.0 if k.dtype == torch.float64 else 20.0
        shift = torch.maximum(m, fwd.scale - lam - margin)
        if not causal:
            shift = torch.maximum(shift, bwd.scale - lam - margin)
        shift = shift.detach()
        # Carries as seen from the chunk's edge rows (weights <= exp(margin)), decayed further
        # into the chunk by wc: no factor exceeds exp(margin), so no denormal in wc gets amplified.
        cf = _exp(fwd.scale - lam - shift) * fwd.has
        cb = _exp(bwd.scale - lam - shift) * bwd.has
        if causal:
            cb = torch.zeros_like(cb)
        carried = torch.stack(
            [torch.stack([cf * fwd.avg, cf], 2), torch.stack([cb * bwd.avg, cb], 2)]
        )
        carried = carried.view(2, B, n, 2, h, g).permute(4, 0, 1, 2, 3, 5).reshape(h, 2, -1)
        pos = idx.to(k.dtype)
        wc = torch.exp(-rates[:, None, None] * torch.stack([pos, C - 1 - pos], 1))  # (h, C, 2)
        if bool((shift > m).any()):
            f = _exp(m - shift).view(B, n, h, g).permute(2, 0, 1, 3)  # (h, B, n, g)
            y = (y.view(h, C, B, n, 2, g) * f[:, None, :, :, None]).view(h, C, -1)
        y.baddbmm_(wc, carried)
    y = y.view(h, C, B, n, 2, g)
    num, den = y.select(4, 0), y.select(4, 1)  # (h, C, B, n, g)

    has = (
        _has_key(mp, True).view(B, n, C, 1, 1)
        if causal
        else _has_key(mask, False).view(B, 1, 1, 1, 1)
    )
    if not fallback:
        ratio = (num / den).permute(2, 3, 1, 0, 4)  # (B, n, C, h, g)
        out = torch.where(has, ratio, 0.0).reshape(B, n * C, d)[:, :T]
        return torch.sigmoid(q) * out
    # Rows whose sum fell below `tiny` in some channel: real ones are recomputed exactly, padded
    # ones (nothing reads them) give 0.
    weak = (den.amin(4).amin(0) < lim.tiny).permute(1, 2, 0)[:, :, :, None, None]  # (B, n, C, 1, 1)
    real = mc[:, :, :, :, None] > 0
    zero = ~has | (weak & ~real)
    if bool(weak.any()) or bool(zero.any()):
        den = den.clamp_min(lim.tiny)  # no inf or NaN in the gradients of rows replaced below
    ratio = (num / den).permute(2, 3, 1, 0, 4)  # (B, n, C, h, g), a view
    if bool(zero.any()):
        ratio = ratio.masked_fill(zero, 0.0)
    bad = (weak & real & has).reshape(B, n * C)[:, :T]
    if bool(bad.any()):
        rows = bad.nonzero()
        b_idx, t_idx = rows[:, 0], rows[:, 1]
        exact = _decay_exact(kc, vc, mc, lam, fwd, bwd, causal, b_idx, t_idx)
        ratio = ratio.reshape(B, n * C, d).index_put((b_idx, t_idx), exact)
    gate = torch.sigmoid(q)
    if pad > 0:
        gate = F.pad(gate, (0, 0, 0, pad))
    return (gate.view(B, n, C, h, g) * ratio.view(B, n, C, h, g)).view(B, n * C, d)[:, :T]


class DecayState(NamedTuple):
    """State of the causal AFT-decay recurrence, O(d) per sequence: exp(scale) [num, den] is the
    decayed weight sum of all keys so far (scale follows the running maximum, so neither sum
    overflows nor underflows)."""

    scale: Tensor  # (B, d)
    num: Tensor
    den: Tensor


def decay_state(v: Tensor) -> DecayState:
    """The empty state for values shaped like v: (B, d)."""
    return DecayState(torch.full_like(v, _limits(v).neg), torch.zeros_like(v), torch.zeros_like(v))


def aft_decay_step(
    state: DecayState,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    decay: Tensor,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, DecayState]:
    """One position of causal AFT-decay: q, k, v (B, d); key_mask (B,), True for a real token.
    Returns y_t (B, d), what `aft_decay(..., causal=True)` gives at t, and the next state:
    scale' = max(scale - lambda, K_t), [num, den]' = exp(scale - lambda - scale') [num, den]
    + exp(K_t - scale') [V_t, 1]."""
    lim = _limits(k)
    lam = decay.to(k.dtype).repeat_interleave(v.shape[1] // decay.shape[0])
    real = torch.ones_like(k) if key_mask is None else key_mask[:, None].to(k.dtype).expand_as(k)
    k = k.masked_fill(real == 0, lim.neg)
    old = state.scale - lam
    new = torch.maximum(old, k).detach()
    a, b = _exp(old - new), _exp(k - new) * real
    num, den = a * state.num + b * v, a * state.den + b
    y = torch.sigmoid(q) * torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
    return y, DecayState(new, num, den)
