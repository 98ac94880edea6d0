"""AFT-decay, w[t, t'] = -lambda_h |t - t'|: any length, linear time and memory (`aft_decay`), and
its causal recurrence one position at a time (`aft_decay_step`). Exported by aft.functional with
the other variants; the numerics (shifted exponentials, exact fallback) are the same as theirs.

TorchScript-compatible: the encoder scripts these functions into model.pt.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from aft.numerics import exp_floored, has_key, limits, real_keys


class _Chunks(NamedTuple):
    """aft_decay's inputs cut into n chunks of C positions, the last one padded by `pad` rows."""

    kc: Tensor  # (B, n, C, d) keys; padded and masked-out keys a huge negative
    vc: Tensor  # (B, n, C, d)
    mc: Tensor  # (B, n, C, 1) float, 1 on real keys
    mask: Tensor  # (B, T, 1) the same mask, unpadded
    rates: Tensor  # (h,) the decay rates, in k's dtype
    lam: Tensor  # (d,) each channel's rate (its head's)
    pad: int
    masked: bool  # some key is masked out or padded


class Carry(NamedTuple):
    """Per chunk and channel, the keys beyond one edge of the chunk (all chunks before it, or all
    after it) as seen from that edge: weight sum exp(scale) and weighted average of V `avg`.
    `has` is 1 where there is any such key, else 0 (scale is then a huge negative, avg 0)."""

    scale: Tensor  # (B, n, d)
    avg: Tensor
    has: Tensor


def _carry(
    scale: Tensor, num: Tensor, den: Tensor, lam: Tensor, chunk: int, neg: float, reverse: bool
) -> Carry:
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
        return Carry(
            torch.cat([scale[:, 1:], none], 1),
            torch.cat([avg[:, 1:], zero], 1),
            torch.cat([hasf[:, 1:], zero], 1),
        )
    return Carry(
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
    lim = limits(kc)
    weak = (den < lim.tiny) & (mc.sum(2) > 0)
    if not bool(weak.any()):
        return m, num, den
    idx = torch.arange(kc.shape[2], device=kc.device, dtype=kc.dtype)
    a = kc - lam * (idx - edge).abs()[:, None]  # padded keys stay huge negatives
    top = a.amax(2).detach()
    e = exp_floored(a - top[:, :, None]) * mc
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
    fwd: Carry,
    bwd: Carry,
    causal: bool,
    b_idx: Tensor,
    t_idx: Tensor,
    block: int = 64,
) -> Tensor:
    """Exact rows (b_idx, t_idx): the row's own chunk term by term in the log domain, plus the
    carries (exact already). O(chunk d) per row, `block` rows at a time."""
    neg = limits(kc).neg
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
        p = exp_floored(logit - top[:, None]) * ok
        pf = exp_floored(sf - top) * fwd.has[b, c]
        num = (p * vc[b, c]).sum(1) + pf * fwd.avg[b, c]
        den = p.sum(1) + pf
        if not causal:
            pb = exp_floored(sb - top) * bwd.has[b, c]
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
    part = decay_part(k, v, decay, key_padding_mask, causal, chunk, True)
    many = part.ch.kc.shape[1] > 1
    fwd, bwd = decay_carries([part], chunk, causal)[0] if many else _no_carries(part.m)
    return decay_finish(q, part, fwd, bwd, many, causal, fallback)


class DecayPart(NamedTuple):
    """What aft_decay computes over one slice of whole chunks without the rest of the sequence:
    the chunk layout, each chunk's own terms y (h, C, B n 2 g) and key maxima m (B, n, d), and
    its weight sums as seen from its last row and from its first row (scale, num, den)."""

    ch: _Chunks
    m: Tensor
    y: Tensor
    last: tuple[Tensor, Tensor, Tensor]
    first: tuple[Tensor, Tensor, Tensor]


def decay_part(
    k: Tensor,
    v: Tensor,
    decay: Tensor,
    key_padding_mask: Tensor | None,
    causal: bool,
    chunk: int,
    whole: bool,
) -> DecayPart:
    """aft_decay's work on the keys and values of one slice of a sequence (`whole`: all of it),
    its length a multiple of `chunk` unless it ends the sequence: a long pass runs slice by slice
    so that each stays in the cache, and only the chunks' edge sums cross slices
    (`decay_carries`). A whole sequence of one chunk (a sentence) skips the edge sums."""
    ch = _chunks(k, v, decay, key_padding_mask, chunk, whole)
    m, x = _weighted_values(ch)
    w = _decay_matrices(ch, causal)
    B, n, C, d = ch.kc.shape
    h = ch.rates.shape[0]
    if whole and n == 1:  # a sentence: one chunk, nothing to carry
        zero = torch.zeros_like(m)
        return DecayPart(ch, m, torch.bmm(w, x), (m, zero, zero), (m, zero, zero))
    edges = torch.bmm(torch.stack([w[:, C - 1], w[:, 0]], 1), x)  # (h, 2, B * n * 2 * g)
    edges = edges.view(h, 2, B, n, 2, d // h).permute(1, 4, 2, 3, 0, 5).reshape(2, 2, B, n, d)
    last = _edge_sums(ch.kc, ch.vc, ch.mc, ch.lam, m, edges[0, 0], edges[0, 1], C - 1)
    first = last
    if not causal:
        first = _edge_sums(ch.kc, ch.vc, ch.mc, ch.lam, m, edges[1, 0], edges[1, 1], 0)
    return DecayPart(ch, m, torch.bmm(w, x), last, first)


def decay_carries(parts: list[DecayPart], chunk: int, causal: bool) -> list[tuple[Carry, Carry]]:
    """The forward and backward carries into every chunk of every part (in sequence order):
    each chunk's edge sums carried across all chunks of all parts. The backward carry is unused
    (the forward one stands in) when causal."""
    lam, neg = parts[0].ch.lam, limits(parts[0].m).neg
    last = [torch.cat([p.last[i] for p in parts], 1) for i in range(3)]
    fwd = _carry(last[0], last[1], last[2], lam, chunk, neg, False)
    bwd = fwd
    if not causal:
        first = [torch.cat([p.first[i] for p in parts], 1) for i in range(3)]
        bwd = _carry(first[0], first[1], first[2], lam, chunk, neg, True)
    out: list[tuple[Carry, Carry]] = []
    at = 0
    for p in parts:
        n = p.m.shape[1]
        out.append((_carry_slice(fwd, at, n), _carry_slice(bwd, at, n)))
        at += n
    return out


def decay_finish(
    q: Tensor,
    part: DecayPart,
    fwd: Carry,
    bwd: Carry,
    carried: bool,
    causal: bool,
    fallback: bool,
) -> Tensor:
    """The part's output (B, slice, d): its chunks' own terms plus the carried ones (`carried`:
    the sequence has more than one chunk), sigmoid(Q) num / den. A padded row of a part with no
    real key gives 0 (nothing reads padded rows), whatever the rest of the sequence holds."""
    y = part.y
    if carried:
        y = _add_carried(y, part.ch, part.m, fwd, bwd, causal)
    return _output(q, part.ch, y, fwd, bwd, causal, fallback)


def _no_carries(m: Tensor) -> tuple[Carry, Carry]:
    nothing = torch.zeros_like(m)
    none = Carry(torch.full_like(m, limits(m).neg), nothing, nothing)
    return none, none


def _carry_slice(c: Carry, at: int, n: int) -> Carry:
    return Carry(c.scale[:, at : at + n], c.avg[:, at : at + n], c.has[:, at : at + n])


def _chunks(
    k: Tensor, v: Tensor, decay: Tensor, key_padding_mask: Tensor | None, chunk: int, whole: bool
) -> _Chunks:
    """The chunk layout: keys (masked ones a huge negative), values and mask in (B, n, C, .).
    C is `chunk`, or the length of a whole sequence shorter than that."""
    B, T, d = v.shape
    h = decay.shape[0]
    if decay.dim() != 1 or d % h != 0 or k.shape != v.shape or chunk < 1:
        raise ValueError(
            "aft_decay needs decay of shape (h,) with d % h == 0, k like v, chunk >= 1"
        )
    g = d // h
    lim = limits(k)
    rates = decay.to(k.dtype)
    lam = rates.repeat_interleave(g)  # (d,)
    mask = real_keys(k, key_padding_mask)
    C = min(chunk, T) if whole else chunk
    n = (T + C - 1) // C
    pad = n * C - T
    km = k if key_padding_mask is None else k.masked_fill(mask == 0, lim.neg)
    vp, mp = v, mask
    if pad > 0:
        km = F.pad(km, (0, 0, 0, pad), value=lim.neg)
        vp, mp = F.pad(v, (0, 0, 0, pad)), F.pad(mask, (0, 0, 0, pad))
    kc, vc, mc = km.view(B, n, C, d), vp.view(B, n, C, d), mp.view(B, n, C, 1)
    return _Chunks(kc, vc, mc, mask, rates, lam, pad, key_padding_mask is not None or pad > 0)


def _weighted_values(ch: _Chunks) -> tuple[Tensor, Tensor]:
    """Each chunk's key maximum m (B, n, d), and exp(K - m) [V, 1] laid out (h, C, B n 2 g),
    so that one batched matrix product per head applies a (C x C) decay matrix to every chunk
    of the batch."""
    B, n, C, d = ch.kc.shape
    h = ch.rates.shape[0]
    g = d // h
    m = ch.kc.amax(2).detach()  # (B, n, d); a huge negative in chunks without keys
    e = exp_floored(ch.kc - m[:, :, None])
    if ch.masked:
        e = e * ch.mc
    x = torch.empty(h, C, B, n, 2, g, dtype=ch.kc.dtype, device=ch.kc.device)
    xs = x.permute(2, 3, 1, 0, 4, 5)  # (B, n, C, h, 2, g) view
    xs.select(4, 0).copy_((e * ch.vc).view(B, n, C, h, g))
    xs.select(4, 1).copy_(e.view(B, n, C, h, g))
    return m, x.view(h, C, B * n * 2 * g)


def _decay_matrices(ch: _Chunks, causal: bool) -> Tensor:
    """exp(-lambda_h |i - j|) (h, C, C), lower-triangular when causal. Plain exp (small
    tensors): far entries underflow to exactly 0."""
    C = ch.kc.shape[2]
    idx = torch.arange(C, device=ch.kc.device)
    rel = idx[:, None] - idx[None, :]  # i - j
    w = torch.exp(-ch.rates[:, None, None] * rel.abs().to(ch.kc.dtype))  # (h, C, C)
    if causal:
        w = w.masked_fill(rel[None] < 0, 0.0)
    return w


def _add_carried(y: Tensor, ch: _Chunks, m: Tensor, fwd: Carry, bwd: Carry, causal: bool) -> Tensor:
    """y (the chunks' own terms, (h, C, B n 2 g)) plus the carried terms, as two more columns
    of the same product, decayed into the chunk by exp(-lambda i) and exp(-lambda (C - 1 - i))."""
    B, n, C, d = ch.kc.shape
    h = ch.rates.shape[0]
    g = d // h
    lam = ch.lam
    # One shift per chunk and channel: the chunk max, raised where a carry would outweigh it
    # by more than exp(margin) (so nothing overflows); rows that end up below `tiny` fall back.
    margin = 200.0 if ch.kc.dtype == torch.float64 else 20.0
    shift = torch.maximum(m, fwd.scale - lam - margin)
    if not causal:
        shift = torch.maximum(shift, bwd.scale - lam - margin)
    shift = shift.detach()
    # Carries as seen from the chunk's edge rows (weights <= exp(margin)), decayed further
    # into the chunk by wc: no factor exceeds exp(margin), so no denormal in wc gets amplified.
    cf = exp_floored(fwd.scale - lam - shift) * fwd.has
    cb = exp_floored(bwd.scale - lam - shift) * bwd.has
    if causal:
        cb = torch.zeros_like(cb)
    carried = torch.stack([torch.stack([cf * fwd.avg, cf], 2), torch.stack([cb * bwd.avg, cb], 2)])
    carried = carried.view(2, B, n, 2, h, g).permute(4, 0, 1, 2, 3, 5).reshape(h, 2, -1)
    pos = torch.arange(C, device=ch.kc.device).to(ch.kc.dtype)
    wc = torch.exp(-ch.rates[:, None, None] * torch.stack([pos, C - 1 - pos], 1))  # (h, C, 2)
    if bool((shift > m).any()):
        f = exp_floored(m - shift).view(B, n, h, g).permute(2, 0, 1, 3)  # (h, B, n, g)
        y = (y.view(h, C, B, n, 2, g) * f[:, None, :, :, None]).view(h, C, -1)
    y.baddbmm_(wc, carried)
    return y


def _output(
    q: Tensor,
    ch: _Chunks,
    y: Tensor,
    fwd: Carry,
    bwd: Carry,
    causal: bool,
    fallback: bool,
) -> Tensor:
    """sigmoid(Q) num / den, (B, T, d). With `fallback`, real rows whose den underflowed are
    recomputed exactly (`_decay_exact`) and padded ones give 0."""
    B, n, C, d = ch.kc.shape
    h = ch.rates.shape[0]
    g = d // h
    T = q.shape[1]
    y = y.view(h, C, B, n, 2, g)
    num, den = y.select(4, 0), y.select(4, 1)  # (h, C, B, n, g)
    has = (
        has_key(ch.mc.view(B, n * C, 1), True).view(B, n, C, 1, 1)
        if causal
        else has_key(ch.mask, False).view(B, 1, 1, 1, 1)
    )
    if not fallback:
        ratio = (num / den).permute(2, 3, 1, 0, 4)  # (B, n, C, h, g)
        out = torch.where(has, ratio, 0.0).reshape(B, n * C, d)[:, :T]
        return torch.sigmoid(q) * out
    # Rows whose sum fell below `tiny` in some channel: real ones are recomputed exactly, padded
    # ones (nothing reads them) give 0.
    tiny = limits(ch.kc).tiny
    weak = (den.amin(4).amin(0) < tiny).permute(1, 2, 0)[:, :, :, None, None]  # (B, n, C, 1, 1)
    real = ch.mc[:, :, :, :, None] > 0
    zero = ~has | (weak & ~real)
    if bool(weak.any()) or bool(zero.any()):
        den = den.clamp_min(tiny)  # no inf or NaN in the gradients of rows replaced below
    ratio = (num / den).permute(2, 3, 1, 0, 4)  # (B, n, C, h, g), a view
    if bool(zero.any()):
        ratio = ratio.masked_fill(zero, 0.0)
    bad = (weak & real & has).reshape(B, n * C)[:, :T]
    if bool(bad.any()):
        rows = bad.nonzero()
        b_idx, t_idx = rows[:, 0], rows[:, 1]
        exact = _decay_exact(ch.kc, ch.vc, ch.mc, ch.lam, fwd, bwd, causal, b_idx, t_idx)
        ratio = ratio.reshape(B, n * C, d).index_put((b_idx, t_idx), exact)
    gate = torch.sigmoid(q)
    if ch.pad > 0:
        gate = F.pad(gate, (0, 0, 0, ch.pad))
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
    return DecayState(torch.full_like(v, limits(v).neg), torch.zeros_like(v), torch.zeros_like(v))


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
    lim = limits(k)
    lam = decay.to(k.dtype).repeat_interleave(v.shape[1] // decay.shape[0])
    real = torch.ones_like(k) if key_mask is None else key_mask[:, None].to(k.dtype).expand_as(k)
    k = k.masked_fill(real == 0, lim.neg)
    old = state.scale - lam
    new = torch.maximum(old, k).detach()
    a, b = exp_floored(old - new), exp_floored(k - new) * real
    num, den = a * state.num + b * v, a * state.den + b
    y = torch.sigmoid(q) * torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
    return y, DecayState(new, num, den)
