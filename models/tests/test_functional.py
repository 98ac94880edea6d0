"""aft.functional against a literal float64 loop, plus causality, padding, gradients, fallback."""

import pytest
import torch
from aft import functional as A
from aft.encoder import VARIANTS as LIBRARY_VARIANTS

# Every variant the library offers is tested (a new one fails in `run` until it is set up here).
# "local" and "conv" take the dense (banded matrix) path at these short lengths; "/band" forces
# the per-offset band path that longer inputs take.
CHUNKED = ["decay"]  # no bias table: the generic tests below and its own at the end
VARIANTS = [v for v in LIBRARY_VARIANTS if v not in CHUNKED] + ["local/band", "conv/band"]
BIASED = [v for v in VARIANTS if v != "simple"]
# The tests that hold for every variant as they are also run AFT-decay (in chunks of DECAY_CHUNK,
# so that T = 10 spans three chunks, the last one padded); its own tests are at the end.
GENERIC = VARIANTS + CHUNKED
B, T, D, H, S, WINDOW, DECAY_CHUNK = 2, 10, 4, 2, 5, 3, 4


def loop_reference(q, k, v, bias, mask, causal):
    """Y_t = sigmoid(Q_t) sum_t' exp(K_t' + w[t,t']) V_t' / sum_t' exp(K_t' + w[t,t']), in float64,
    one (t, t') pair at a time. bias: (T, T) or (T, T, d); rows without an allowed key give 0."""
    q, k, v, bias = (x.double() for x in (q, k, v, bias))
    if bias.dim() == 2:
        bias = bias[:, :, None]
    y = torch.zeros_like(q)
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            num = torch.zeros(q.shape[2], dtype=torch.float64)
            den = torch.zeros(q.shape[2], dtype=torch.float64)
            for s in range(q.shape[1]):
                if (mask is not None and not mask[b, s]) or (causal and s > t):
                    continue
                e = torch.exp(k[b, s] + bias[t, s])
                num += e * v[b, s]
                den += e
            if (den > 0).all():
                y[b, t] = torch.sigmoid(q[b, t]) * num / den
    return y


def decay_bias(rates, T):
    """AFT-decay's (T, T, D) bias: -rate |t - t'|, each head's rate over its D / H channels."""
    idx = torch.arange(T, dtype=torch.float64)
    lam = rates.double().repeat_interleave(D // rates.shape[0])
    return -lam[None, None, :] * (idx[:, None] - idx[None, :]).abs()[:, :, None]


def base(variant):
    return variant.split("/")[0]


def dense_bias(variant, w, T):
    """The (T, T[, d]) bias each variant's w stands for."""
    idx = torch.arange(T)
    variant = base(variant)
    if variant == "full":
        return w[:T, :T]
    if variant == "local":
        return torch.where((idx[:, None] - idx[None, :]).abs() < WINDOW, w[:T, :T], 0.0)
    if variant == "simple":
        return torch.zeros(T, T, dtype=w.dtype)
    if variant == "decay":  # w: (H,) rates; per channel -rate |t - t'|
        return decay_bias(w, T)
    off = idx[None, :] - idx[:, None] + w.shape[1] // 2  # conv: tap of key t' for query t
    taps = w[:, off.clamp(0, w.shape[1] - 1)].permute(1, 2, 0)  # (T, T, h)
    taps = torch.where(((off >= 0) & (off < w.shape[1]))[:, :, None], taps, 0.0)
    return taps.repeat_interleave(D // w.shape[0], -1)


def run(variant, q, k, v, w, mask=None, causal=False, **kw):
    variant, _, path = variant.partition("/")
    if path == "band":
        kw["dense_max"] = 0
    if variant == "full":
        return A.aft_full(q, k, v, w, mask, causal, **kw)
    if variant == "local":
        return A.aft_local(q, k, v, w, WINDOW, mask, causal, **kw)
    if variant == "simple":
        return A.aft_simple(q, k, v, mask, causal)
    if variant == "decay":
        return A.aft_decay(q, k, v, w, mask, causal, chunk=DECAY_CHUNK, **kw)
    if variant == "conv":
        return A.aft_conv(q, k, v, w, mask, causal, **kw)
    raise ValueError(f"variant {variant!r} has no set-up in this test")


def inputs(variant, k_scale=3.0, w_scale=3.0, dtype=torch.float64, seed=0, t=T):
    g = torch.Generator().manual_seed(seed)

    def uniform(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1) * scale).to(dtype)

    q, v = uniform(B, t, D, scale=3), uniform(B, t, D, scale=3)
    conv = base(variant) == "conv"
    k = uniform(B, t, H if conv else D, scale=k_scale)
    if base(variant) == "decay":  # rates in [0, w_scale / 4]
        return q, k, v, uniform(H, scale=w_scale).abs() / 4
    w = uniform(H, S, scale=w_scale) if conv else uniform(t, t, scale=w_scale)
    return q, k, v, w


def padding_mask(t=T):
    mask = torch.ones(B, t, dtype=torch.bool)
    mask[1, t - 3 :] = False
    return mask


def reference(variant, q, k, v, w, mask, causal):
    kk = k.repeat_interleave(D // H, -1) if base(variant) == "conv" else k
    return loop_reference(q, kk, v, dense_bias(variant, w.double(), q.shape[1]), mask, causal)


def rel_err(y, ref):
    """Max error relative to the output's scale."""
    return ((y.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("regime", [(3, 3), (80, 10), (10, 80)], ids=["normal", "bigK", "bigW"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
def test_matches_loop(variant, causal, regime, dtype, tol):
    q, k, v, w = inputs(variant, *regime, dtype=dtype)
    mask = padding_mask()
    y = run(variant, q, k, v, w, mask, causal)
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert rel_err(y, reference(variant, q, k, v, w, mask, causal)) < tol


def extreme_inputs(variant, dtype):
    """Keys and biases both of size 80 that break the fast forms, though every true term
    exp(K + w) is about 1. full/local: K and w peak at alternate t', so each product
    exp(K - max K) exp(w - max w) underflows in float32. conv: K = 80 everywhere and a kernel of
    -80 covering every key, so the band path's global sum + (exp(w) - 1) terms cancel to nothing
    (the dense path has no such cancellation)."""
    q, k, v, w = inputs(variant, 1, 1, dtype=dtype, seed=1)
    if base(variant) == "conv":
        g = torch.Generator().manual_seed(2)
        w = (torch.rand(H, 2 * T - 1, generator=g, dtype=torch.float64) * 2 - 81).to(dtype)
        return q, k + 80, v, w
    sign = (torch.arange(T) % 2 * 2 - 1).to(dtype)  # -1, +1, -1, ...
    return q, k + 80 * sign[None, :, None], v, w - 80 * sign[None, :]


@pytest.mark.parametrize("variant", BIASED)
@pytest.mark.parametrize("causal", [False, True])
def test_extreme_falls_back_to_exact(variant, causal):
    q, k, v, w = extreme_inputs(variant, torch.float32)
    mask = padding_mask()
    ref = reference(variant, q, k, v, w, mask, causal)
    fast = run(variant, q, k, v, w, mask, causal, fallback=False)
    if variant == "conv":  # dense conv: every term positive, nothing cancels, no fallback needed
        assert torch.isfinite(fast).all() and rel_err(fast, ref) < 1e-4
        return
    assert not torch.isfinite(fast).all() or rel_err(fast, ref) > 1e-2  # the fast form fails...
    y = run(variant, q, k, v, w, mask, causal)
    assert torch.isfinite(y).all() and rel_err(y, ref) < 1e-4  # ...and is caught


@pytest.mark.parametrize("variant", VARIANTS)
def test_extreme_float64_and_scripted(variant):
    q, k, v, w = extreme_inputs(variant, torch.float64)
    mask = padding_mask()
    ref = reference(variant, q, k, v, w, mask, True)
    assert rel_err(run(variant, q, k, v, w, mask, True), ref) < 1e-6
    name, path = base(variant), variant.partition("/")[2]
    fn = {"full": A.aft_full, "local": A.aft_local, "simple": A.aft_simple, "conv": A.aft_conv}
    scripted = torch.jit.script(fn[name])
    args = (q, k, v) if name == "simple" else (q, k, v, w)
    if name == "local":
        args = args + (WINDOW,)
    q32 = [a.float() if isinstance(a, torch.Tensor) else a for a in args]
    rest = (mask, True) if name in ("full", "simple") else (mask, True, True, 0 if path else 256)
    assert torch.equal(scripted(*q32, *rest), fn[name](*q32, *rest))


@pytest.mark.parametrize("variant", GENERIC)
def test_all_padded_rows_are_zero(variant):
    q, k, v, w = inputs(variant)
    mask = padding_mask()
    mask[0] = False
    for causal in (False, True):
        y = run(variant, q, k, v, w, mask, causal)
        assert torch.isfinite(y).all() and (y[0] == 0).all()


@pytest.mark.parametrize("variant", GENERIC)
def test_causal(variant):
    q, k, v, w = inputs(variant, 10, 10)
    y = run(variant, q, k, v, w, causal=True)
    t0 = 4
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for x in (q2, k2, v2):
        x[:, t0 + 1 :] = torch.randn_like(x[:, t0 + 1 :]) * 20
    y2 = run(variant, q2, k2, v2, w, causal=True)
    torch.testing.assert_close(y2[:, : t0 + 1], y[:, : t0 + 1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y2[:, t0 + 1 :], y[:, t0 + 1 :])


@pytest.mark.parametrize("variant", GENERIC)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_padding_invariance(variant, causal, dtype, tol):
    """Real positions see neither the padding's values nor how much of it there is."""
    q, k, v, w = inputs(variant, 5, 5, dtype=dtype, t=T + 6)
    n = 7
    alone = run(variant, q[:1, :n], k[:1, :n], v[:1, :n], w, None, causal)
    for pad in (1, 9):  # T = n + pad, padding filled with large junk
        mask = torch.zeros(1, n + pad, dtype=torch.bool)
        mask[:, :n] = True
        qp, kp, vp = (x[:1, : n + pad].clone() for x in (q, k, v))
        for x in (qp, kp, vp):
            x[:, n:] = 50
        y = run(variant, qp, kp, vp, w, mask, causal)
        torch.testing.assert_close(y[:, :n], alone, rtol=tol, atol=tol)


@pytest.mark.parametrize("variant", GENERIC)
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck(variant, causal):
    q, k, v, w = (x[:, :6] if x.dim() == 3 else x for x in inputs(variant, 2, 2))
    if base(variant) in ("full", "local"):
        w = w[:6, :6]
    mask = padding_mask(6)
    args = [x.clone().requires_grad_() for x in (q, k, v, w)]
    assert torch.autograd.gradcheck(lambda *a: run(variant, *a, mask, causal), args)


@pytest.mark.parametrize("variant", ["full", "local", "local/band", "conv/band"])
def test_gradcheck_exact_path(variant):
    q, k, v, w = extreme_inputs(variant, torch.float64)
    k, w = k * 5, w * 5  # |K| + |w| up to 800: the float64 fast form underflows too
    mask = padding_mask()
    fast = run(variant, q, k, v, w, mask, fallback=False)
    assert not torch.allclose(fast, run(variant, q, k, v, w, mask), rtol=1e-3, atol=1e-3)
    args = [x[:, :6] if x.dim() == 3 else x for x in (q, k, v)]
    args = [
        x.clone().requires_grad_() for x in args + [w if base(variant) == "conv" else w[:6, :6]]
    ]
    assert torch.autograd.gradcheck(lambda *a: run(variant, *a, mask[:, :6]), args)


@pytest.mark.parametrize("dense_max", [A.DENSE_MAX, 0], ids=["dense", "band"])
def test_local_bias_gradient_inside_window_only(dense_max):
    q, k, v, w = inputs("local")
    w = w.clone().requires_grad_()
    A.aft_local(q, k, v, w, WINDOW, dense_max=dense_max).sum().backward()
    idx = torch.arange(T)
    inside = (idx[:, None] - idx[None, :]).abs() < WINDOW
    assert (w.grad[inside] != 0).all() and (w.grad[~inside] == 0).all()


@pytest.mark.parametrize("dense_max", [A.DENSE_MAX, 0], ids=["dense", "band"])
def test_conv_kernel_gradient(dense_max):
    q, k, v, w = inputs("conv")
    w = w.clone().requires_grad_()
    A.aft_conv(q, k, v, w, dense_max=dense_max).sum().backward()
    assert (w.grad != 0).all()
    w.grad = None
    A.aft_conv(
        q, k, v, w, causal=True, dense_max=dense_max
    ).sum().backward()  # taps after t: unused
    assert (w.grad[:, : S // 2 + 1] != 0).all() and (w.grad[:, S // 2 + 1 :] == 0).all()


def test_full_accepts_larger_bias_and_local_window_covering_all():
    q, k, v, w = inputs("full", t=T)
    big = torch.randn(T + 5, T + 5, dtype=w.dtype)
    big[:T, :T] = w
    torch.testing.assert_close(A.aft_full(q, k, v, big), A.aft_full(q, k, v, w))
    torch.testing.assert_close(A.aft_local(q, k, v, w, T), A.aft_full(q, k, v, w))


@pytest.mark.parametrize("causal", [False, True])
def test_full_row_blocks(causal):
    q, k, v, w = inputs("full")
    mask = padding_mask()
    whole = A.aft_full(q, k, v, w, mask, causal)
    torch.testing.assert_close(A.aft_full(q, k, v, w, mask, causal, block=3), whole)


@pytest.mark.parametrize("variant", ["local", "conv"])
@pytest.mark.parametrize("causal", [False, True])
def test_dense_and_band_paths_agree(variant, causal):
    """Longer than the band: both paths compute the same banded bias, in the same order of size."""
    q, k, v, w = inputs(variant, 4, 4, t=40)
    mask = padding_mask(40)
    dense, band = (
        run(variant, q, k, v, w, mask, causal),
        run(variant + "/band", q, k, v, w, mask, causal),
    )
    torch.testing.assert_close(dense, band, rtol=1e-10, atol=1e-10)


# --- AFT-decay --------------------------------------------------------------------------------

# (key scale, rates): ordinary; keys of +-80; rates tiny and zero (a global average); rates
# large (each row sees its own key alone, in float32 its neighbours' weight underflows); both.
DECAY_REGIMES = {
    "normal": (3.0, [0.3, 0.02]),
    "bigK": (80.0, [0.3, 2.0]),
    "tinyRate": (3.0, [1e-7, 0.0]),
    "bigRate": (3.0, [50.0, 20.0]),
    "bigK_bigRate": (80.0, [30.0, 1e-3]),
}


def decay_inputs(k_scale, rates, dtype, t=T, seed=0):
    q, k, v, _ = inputs("decay", dtype=dtype, seed=seed, t=t)
    return q, k * k_scale / 3, v, torch.tensor(rates, dtype=dtype)


def assert_decay_matches(y, ref, mask, tol):
    """Real rows equal the loop within tol (relative to the output's scale); a padded query row
    either does too or is exactly 0 (aft_decay zeroes padded rows whose fast form underflowed)."""
    real = mask[:, :, None].expand_as(ref)
    scale = ref.abs().max()
    assert ((y.double() - ref).abs()[real].max() / scale).item() < tol
    pad_err = (y.double() - ref).abs() / scale
    assert ((pad_err < tol) | (y == 0))[~real].all()


@pytest.mark.parametrize("regime", list(DECAY_REGIMES))
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("chunk", [4, 64], ids=["3chunks", "1chunk"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_decay_matches_loop(regime, causal, chunk, dtype, tol):
    k_scale, rates = DECAY_REGIMES[regime]
    q, k, v, lam = decay_inputs(k_scale, rates, dtype)
    mask = padding_mask()
    y = A.aft_decay(q, k, v, lam, mask, causal, chunk=chunk)
    assert y.dtype == dtype and y.shape == q.shape and torch.isfinite(y).all()
    ref = loop_reference(q, k, v, decay_bias(lam, T), mask, causal)
    assert_decay_matches(y, ref, mask, tol)


@pytest.mark.parametrize("causal", [False, True])
def test_decay_many_chunks_matches_full(causal):
    """T = 700 in 11 chunks (the last one partial), against AFT-full given the same bias as a
    (T, T) matrix, one head at a time (aft_full is itself checked against the loop above)."""
    t, d_head = 700, D // H
    q, k, v, _ = inputs("decay", k_scale=6, t=t, seed=3)
    lam = torch.tensor([0.5, 1e-3], dtype=torch.float64)
    mask = torch.ones(B, t, dtype=torch.bool)
    mask[1, 450:] = False
    y = A.aft_decay(q, k, v, lam, mask, causal)
    idx = torch.arange(t, dtype=torch.float64)
    dist = (idx[:, None] - idx[None, :]).abs()
    for head in range(H):
        c = slice(head * d_head, (head + 1) * d_head)
        ref = A.aft_full(q[:, :, c], k[:, :, c], v[:, :, c], -lam[head] * dist, mask, causal)
        torch.testing.assert_close(y[:, :, c], ref, rtol=1e-10, atol=1e-10)


def decay_extreme_inputs(dtype):
    """Keys of -80 but for two of +80 and +40, rates 12 and 3, chunks of 8: inside the first
    chunk, rows far from the +80 key have sums that underflow relative to the chunk's maximum,
    and that chunk's sum seen from its last row underflows too (exp(80 - 12 * 7) against
    exp(80)); yet the +80 key still dominates rows up to ~13 positions away. Returns q, k, v,
    rates, chunk."""
    q, k, v, _ = inputs("decay", dtype=dtype, t=24, seed=4)
    k = torch.full_like(k, -80.0)
    k[:, 0], k[:, 12] = 80.0, 40.0
    return q, k, v, torch.tensor([12.0, 3.0], dtype=dtype), 8


@pytest.mark.parametrize("causal", [False, True])
def test_decay_extreme_falls_back_to_exact(causal):
    q, k, v, lam, chunk = decay_extreme_inputs(torch.float32)
    mask = padding_mask(24)
    ref = loop_reference(q, k, v, decay_bias(lam, 24), mask, causal)
    fast = A.aft_decay(q, k, v, lam, mask, causal, fallback=False, chunk=chunk)
    assert not torch.isfinite(fast).all() or rel_err(fast, ref) > 1e-2  # the fast form fails...
    y = A.aft_decay(q, k, v, lam, mask, causal, chunk=chunk)
    assert torch.isfinite(y).all()
    assert_decay_matches(y, ref, mask, 1e-5)  # ...and is caught


@pytest.mark.parametrize("causal", [False, True])
def test_decay_scripted_equals_eager(causal):
    scripted = torch.jit.script(A.aft_decay)
    q, k, v, lam, chunk = decay_extreme_inputs(torch.float32)
    mask = padding_mask(24)
    for args in [(q, k, v, lam), (q, k * 0.05, v, lam / 20)]:  # fallback rows, and none
        want = A.aft_decay(*args, mask, causal, True, chunk)
        assert torch.equal(scripted(*args, mask, causal, True, chunk), want)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_decay_step_recurrence_equals_causal(dtype, tol):
    """aft_decay_step, one position at a time with O(d) state, gives aft_decay(causal=True)."""
    step = torch.jit.script(A.aft_decay_step)
    q, k, v, lam = decay_inputs(40.0, [0.7, 1e-4], dtype, t=30, seed=5)
    mask = padding_mask(30)
    want = A.aft_decay(q, k, v, lam, mask, True, chunk=8)
    state = A.decay_state(v[:, 0])
    for t in range(30):
        y, state = step(state, q[:, t], k[:, t], v[:, t], lam, mask[:, t])
        torch.testing.assert_close(y, want[:, t], rtol=tol, atol=tol)


def test_decay_rate_gradient():
    """The rates get gradients; a zero rate is a global average, so its head equals AFT-simple."""
    q, k, v, lam = decay_inputs(3.0, [0.0, 0.4], torch.float64, t=40)
    lam = lam.clone().requires_grad_()
    y = A.aft_decay(q, k, v, lam, padding_mask(40), chunk=8)
    y.sum().backward()
    assert (lam.grad != 0).all()
    simple = A.aft_simple(q, k, v, padding_mask(40))
    torch.testing.assert_close(y[:, :, : D // H], simple[:, :, : D // H], rtol=1e-12, atol=1e-12)


def test_decay_gradcheck_exact_path():
    q, k, v, lam, chunk = decay_extreme_inputs(torch.float64)
    k, lam = k * 10, lam * 10  # keys of +-800, rates 120 and 30: float64's fast form fails too
    mask = padding_mask(24)
    fast = A.aft_decay(q, k, v, lam, mask, fallback=False, chunk=chunk)
    assert not torch.isfinite(fast).all() or not torch.allclose(
        fast, A.aft_decay(q, k, v, lam, mask, chunk=chunk), rtol=1e-3, atol=1e-3
    )
    args = [x[:1, :16] for x in (q, k, v)] + [lam]  # still two chunks, with both large keys
    args = [x.clone().requires_grad_() for x in args]
    assert torch.autograd.gradcheck(
        lambda *a: A.aft_decay(*a, mask[:1, :16], chunk=chunk), args, fast_mode=True
    )


def test_decay_rejects_bad_shapes():
    q, k, v, _ = inputs("decay")
    with pytest.raises(ValueError):
        A.aft_decay(q, k, v, torch.ones(3))  # D = 4 is not a multiple of 3 heads
    with pytest.raises(ValueError):
        A.aft_decay(q, k, v, torch.ones(2), chunk=0)
