"""Tests for portable_cnn.philox: Philox-4x32-10 on the array API.

Known answers from Random123, bit-identity across numpy / torch / array-api-strict, layout
against an independent NumPy/pure-Python reference, statistics and determinism.
"""

from __future__ import annotations

import ast
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from array_api_compat import numpy as np_xp

from portable_cnn import philox
from portable_cnn.backends import LIBRARIES, to_host
from portable_cnn.philox import bernoulli, bernoulli_steps, philox4x32, random_bits, uniform

from .conftest import backend_or_skip

BACKENDS = [pytest.param(name, id=name) for name, library in LIBRARIES.items() if library.cpu]
OTHER_BACKENDS = [b for b in BACKENDS if b.values[0] != "numpy"]


def namespace(name):
    return backend_or_skip(name).xp


@pytest.fixture(params=BACKENDS)
def xp(request):
    return namespace(request.param)


def to_numpy(x):
    """Host copy for comparisons."""
    return to_host(x)


# Random123 kat_vectors, "philox4x32 10" lines: counter (4 words), key (2 words), expected.
KAT_PHILOX4X32_10 = [
    (
        (0x00000000, 0x00000000, 0x00000000, 0x00000000),
        (0x00000000, 0x00000000),
        (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8),
    ),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def reference_philox(counter, key, rounds=10):
    """Philox-4x32 on Python ints, straight from the SC'11 paper / Random123 philox.h."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
            k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (
            (p1 >> 32) ^ c1 ^ k0,
            p1 & 0xFFFFFFFF,
            (p0 >> 32) ^ c3 ^ k1,
            p0 & 0xFFFFFFFF,
        )
    return c0, c1, c2, c3


# ------------------------------------------------------------------ known answers


@pytest.mark.parametrize("counter,key,expected", KAT_PHILOX4X32_10)
def test_known_answers_arrays(xp, counter, key, expected):
    words = tuple(xp.asarray([c], dtype=xp.int64) for c in counter)
    out = philox4x32(xp, words, key)
    assert len(out) == 4
    for o in out:
        assert o.dtype == xp.int64
        assert o.shape == (1,)
    assert tuple(int(to_numpy(o)[0]) for o in out) == expected


@pytest.mark.parametrize("counter,key,expected", KAT_PHILOX4X32_10)
def test_known_answers_int_and_mixed_counters(xp, counter, key, expected):
    out = philox4x32(xp, counter, key)  # all Python ints
    assert tuple(int(to_numpy(o)) for o in out) == expected
    # one array word, broadcast against constant words
    mixed = (xp.asarray([counter[0]] * 3, dtype=xp.int64),) + tuple(counter[1:])
    out = philox4x32(xp, mixed, key)
    for o, e in zip(out, expected):
        assert o.shape == (3,)
        assert to_numpy(o).tolist() == [e] * 3


def test_reference_matches_known_answers():
    for counter, key, expected in KAT_PHILOX4X32_10:
        assert reference_philox(counter, key) == expected


@pytest.mark.parametrize("rounds", [1, 7, 10])
def test_against_reference_on_random_counters(xp, rounds):
    rng = np.random.default_rng(12345)
    counters = rng.integers(0, 2**32, size=(4, 300), dtype=np.int64)
    counters[:, :4] = [[0] * 4, [2**32 - 1] * 4, [0, 2**32 - 1, 0, 2**32 - 1], [1, 2, 3, 4]]
    key = (0xDEADBEEF, 0x01234567)
    arrays = tuple(xp.asarray(counters[i].tolist(), dtype=xp.int64) for i in range(4))
    got = np.stack([to_numpy(o) for o in philox4x32(xp, arrays, key, rounds=rounds)])
    want = np.array([reference_philox(tuple(int(v) for v in counters[:, j]), key, rounds) for j in range(300)]).T
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rounds", [1, 2, 3, 10])
def test_mixed_int_and_array_counters(xp, rounds):
    """Python-int counter words (handled on the host) broadcast against array words."""
    key = (0x9ABCDEF0, 0x13579BDF)
    idx = [0, 1, 2**31, 2**32 - 1]
    for pattern in [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 0, 1, 0)]:
        consts = (5, 0xFFFFFFFF, 7, 123456789)
        counter = tuple(xp.asarray(idx, dtype=xp.int64) if a else c for a, c in zip(pattern, consts))
        out = philox4x32(xp, counter, key, rounds=rounds)
        got = np.stack([to_numpy(o) for o in out])
        assert got.shape == (4, len(idx))
        for j, v in enumerate(idx):
            ref_counter = tuple(v if a else c for a, c in zip(pattern, consts))
            assert tuple(got[:, j].tolist()) == reference_philox(ref_counter, key, rounds)


# ------------------------------------------------------------------ layout


def test_random_bits_layout(xp):
    seed, stream, step = 2**40 + 17, 3, 123456
    n = 4 * 25 + 3
    bits = random_bits(xp, n, seed=seed, stream=stream, step=step)
    assert bits.dtype == xp.int64 and bits.shape == (n,)
    got = to_numpy(bits)
    key = (seed & 0xFFFFFFFF, seed >> 32)
    want = [w for i in range(26) for w in reference_philox((i, 0, step, stream), key)][:n]
    assert got.tolist() == want
    # a shorter request is a prefix of a longer one
    short = to_numpy(random_bits(xp, 10, seed=seed, stream=stream, step=step))
    np.testing.assert_array_equal(short, got[:10])


def test_uniform_is_built_from_the_documented_bits():
    shape, kw = (37, 5), dict(seed=7, stream=1, step=9)
    n = math.prod(shape)
    w = random_bits(np_xp, 2 * n, **kw)
    u32 = uniform(np_xp, shape, dtype=np_xp.float32, **kw)
    assert u32.dtype == np.float32 and u32.shape == shape
    want32 = (w[:n] >> 8).astype(np.float64) / 2.0**24
    np.testing.assert_array_equal(u32.astype(np.float64), want32.reshape(shape))
    u64 = uniform(np_xp, shape, dtype=np_xp.float64, **kw)
    assert u64.dtype == np.float64 and u64.shape == shape
    want64 = ((w[0::2] >> 5) * 2.0**26 + (w[1::2] >> 6)) / 2.0**53
    np.testing.assert_array_equal(u64, want64.reshape(shape))


@pytest.mark.parametrize("p", [0.5, 0.25, 0.75, 0.125, 3 / 8, 5 / 16, 1 / 1024, 12345 / 65536])
def test_bernoulli_dyadic_layout(p):
    k, den = Fraction(p).as_integer_ratio()
    m = den.bit_length() - 1
    per_word = 32 // m
    shape, kw = (13, 29), dict(seed=99, stream=2, step=4)
    n = math.prod(shape)
    nwords = -(-n // per_word)
    w = random_bits(np_xp, nwords, **kw)
    fields = (w[None, :] >> (m * np.arange(per_word))[:, None]) & (2**m - 1)  # (field, word)
    want = (fields < k).reshape(-1)[:n].reshape(shape)
    np.testing.assert_array_equal(bernoulli(np_xp, shape, p, **kw), want)


@pytest.mark.parametrize("p", [0.3, 0.9, 1e-6, 1 / 3, Fraction(2, 3), 1 - 2.0**-40])
def test_bernoulli_general_p_compares_full_words(p):
    shape, kw = (11, 23), dict(seed=5, stream=6, step=7)
    w = random_bits(np_xp, math.prod(shape), **kw)
    t = round(Fraction(p) * 2**32)
    np.testing.assert_array_equal(bernoulli(np_xp, shape, p, **kw), (w < t).reshape(shape))


def test_bernoulli_constant_p(xp):
    kw = dict(seed=1, stream=2, step=3)
    for p, value in [(0.0, False), (1.0, True), (0, False), (1, True), (2.0**-40, False)]:
        mask = bernoulli(xp, (4, 6), p, **kw)
        assert mask.dtype == xp.bool and mask.shape == (4, 6)
        assert (to_numpy(mask) == value).all()


# ------------------------------------------------------------------ cross-backend identity


def _draws(xp, device=None):
    kw = dict(seed=0x0123456789ABCDEF, stream=2, step=77, device=device)
    return {
        "bits": random_bits(xp, 4099, **kw),
        "u32": uniform(xp, (33, 65), dtype=xp.float32, **kw),
        "u64": uniform(xp, (31, 67), dtype=xp.float64, **kw),
        "mask_0.5": bernoulli(xp, (128, 169), 0.5, **kw),
        "mask_0.25": bernoulli(xp, (17, 19), 0.25, **kw),
        "mask_0.3": bernoulli(xp, (17, 19), 0.3, **kw),
        "mask_3/1024": bernoulli(xp, (17, 19), 3 / 1024, **kw),
    }


@pytest.mark.parametrize("name", [b.values[0] for b in OTHER_BACKENDS])
def test_bit_identical_across_backends(name):
    xp = namespace(name)
    ref = _draws(np_xp)
    got = _draws(xp)
    for key in ref:
        a, b = to_numpy(got[key]), np.asarray(ref[key])
        assert a.dtype == b.dtype, key
        assert a.shape == b.shape, key
        np.testing.assert_array_equal(a, b, err_msg=key)


def test_array_api_strict_on_another_device():
    """Every creation function receives device=: strict refuses to mix devices."""
    import array_api_strict

    device = array_api_strict.Device("device1")
    got = _draws(array_api_strict, device=device)
    ref = _draws(np_xp)
    for key in ref:
        assert got[key].device == device, key
        np.testing.assert_array_equal(to_numpy(got[key]), ref[key], err_msg=key)


def test_module_imports_no_array_library():
    tree = ast.parse(Path(philox.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"__future__", "math", "operator", "fractions"}, imported


# ------------------------------------------------------------------ many steps in one call

# the default recipe's epoch (7 batches of 128, one of 104) and some awkward shapes
EPOCH_SHAPES = [(128, 10816)] * 7 + [(104, 10816)]
SMALL_EPOCH_SHAPES = [(16, 676)] * 3 + [(13, 676)]
ODD_SHAPES = [(3, 5), (0, 7), (), (33,), (3, 5), (2, 2, 2), (31,)]


def _per_step(xp, shapes, p, first_step, device=None):
    return [
        bernoulli(xp, shape, p, seed=0xABCDEF0123, stream=2, step=first_step + i, device=device)
        for i, shape in enumerate(shapes)
    ]


def _steps(xp, shapes, p, first_step, device=None, **kw):
    return bernoulli_steps(xp, shapes, p, seed=0xABCDEF0123, stream=2, first_step=first_step, device=device, **kw)


def _assert_same_masks(got, want, device=None):
    assert len(got) == len(want)
    for i, (a, b) in enumerate(zip(got, want)):
        if device is not None:
            assert a.device == device, i
        a, b = to_numpy(a), to_numpy(b)
        assert a.shape == b.shape and a.dtype == b.dtype == np.bool_, i
        np.testing.assert_array_equal(a, b, err_msg=f"mask {i}")


@pytest.mark.parametrize("p", [0.5, 0.25, 0.75, 3 / 8, 0.3, 12345 / 65536, 0.0, 1.0])
def test_bernoulli_steps_equal_the_per_step_masks(xp, p):
    epoch = EPOCH_SHAPES if p == 0.5 else SMALL_EPOCH_SHAPES  # the recipe's full epoch at its p
    for shapes, first_step in [(epoch, 7 * 299), (ODD_SHAPES, 2**32 - len(ODD_SHAPES))]:
        got = list(_steps(xp, shapes, p, first_step))
        _assert_same_masks(got, _per_step(xp, shapes, p, first_step))
        _assert_same_masks(got, _per_step(np_xp, shapes, p, first_step))  # and across libraries


@pytest.mark.parametrize("words_per_call", [4, 1000, 43264, 43265, 5 * 43264])
def test_bernoulli_steps_in_chunks_equal_the_per_step_masks(words_per_call):
    shapes = EPOCH_SHAPES[:3] + ODD_SHAPES + EPOCH_SHAPES[-2:]
    masks = _steps(np_xp, shapes, 0.5, 11, words_per_call=words_per_call)
    want = _per_step(np_xp, shapes, 0.5, 11)
    _assert_same_masks(list(masks), want)
    # random access, backwards and with negative indices, crosses chunks in any order
    for i in reversed(range(len(shapes))):
        np.testing.assert_array_equal(masks[i], want[i])
        np.testing.assert_array_equal(masks[i - len(shapes)], want[i])


def test_bernoulli_steps_on_a_non_default_strict_device():
    """Every array is created with device=: array-api-strict refuses to mix its devices."""
    import array_api_strict

    device = array_api_strict.Device("device1")
    for p in (0.5, 0.25, 3 / 8, 0.3, 1.0):
        shapes = EPOCH_SHAPES[-2:] + ODD_SHAPES
        got = list(_steps(array_api_strict, shapes, p, 5, device=device))
        _assert_same_masks(got, _per_step(array_api_strict, shapes, p, 5, device=device), device)
        _assert_same_masks(got, _per_step(np_xp, shapes, p, 5))


def test_generation_reads_nothing_back_to_the_host(monkeypatch):
    """No __bool__/__int__/__float__/__index__/__array__/__dlpack__ on the arrays while masks are made."""
    import array_api_strict

    reads = []

    def forbid(name):
        def read(self, *args, **kwargs):
            reads.append(name)
            raise AssertionError(f"host read {name} during generation")

        return read

    device = array_api_strict.Device("device1")
    conversions = ["__bool__", "__int__", "__float__", "__index__", "__complex__", "__array__", "__dlpack__"]
    masks = []
    with monkeypatch.context() as patch:
        for name in conversions:
            patch.setattr(array_api_strict._array_object.Array, name, forbid(name), raising=False)
        for p in (0.5, 3 / 8, 0.3):
            masks += list(_steps(array_api_strict, EPOCH_SHAPES, p, 3, device=device, words_per_call=50000))
            masks += [bernoulli(array_api_strict, (7, 9), p, seed=1, stream=0, step=2, device=device)]
    assert reads == []
    assert len(masks) == 3 * (len(EPOCH_SHAPES) + 1)


def test_an_epoch_of_masks_takes_one_philox_call_and_unpacks_lazily(monkeypatch):
    calls = []
    real = philox.philox4x32

    def counting(*args, **kwargs):
        calls.append(args[1][0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(philox, "philox4x32", counting)
    masks = bernoulli_steps(np_xp, EPOCH_SHAPES, 0.5, seed=1, stream=0, first_step=0, device=None)
    assert len(masks) == len(EPOCH_SHAPES) and calls == []  # nothing drawn before a mask is asked for
    for mask, shape in zip(masks, EPOCH_SHAPES):
        assert mask.shape == shape
    assert calls == [(sum(math.prod(s) // 32 // 4 for s in EPOCH_SHAPES),)]
    calls.clear()
    list(bernoulli_steps(np_xp, EPOCH_SHAPES, 0.5, seed=1, stream=0, first_step=0, words_per_call=2 * 43264))
    assert len(calls) == 4  # bounded memory: two batches' words per call


def test_bernoulli_steps_bad_arguments():
    kw = {"seed": 0, "stream": 0}
    with pytest.raises(ValueError, match="last step"):
        bernoulli_steps(np_xp, [(2,)] * 3, 0.5, first_step=2**32 - 2, **kw)
    bernoulli_steps(np_xp, [(2,)] * 3, 0.5, first_step=2**32 - 3, **kw)  # the last step fits
    for bad in ({"first_step": -1}, {"first_step": 0, "words_per_call": 3}, {"first_step": 0.5}):
        with pytest.raises((ValueError, TypeError)):
            bernoulli_steps(np_xp, [(2,)], 0.5, **kw, **bad)
    with pytest.raises(ValueError):
        bernoulli_steps(np_xp, [(2,)], 1.5, first_step=0, **kw)
    with pytest.raises(ValueError, match="2\\*\\*32 Philox blocks"):  # checked before anything is drawn
        bernoulli_steps(np_xp, [(2**38,)], 0.3, first_step=0, **kw)
    masks = bernoulli_steps(np_xp, [(2,)], 0.5, first_step=0, **kw)
    with pytest.raises(IndexError):
        masks[1]
    assert list(bernoulli_steps(np_xp, [], 0.5, first_step=2**32 - 1, **kw)) == []


def test_a_library_that_narrows_int64_is_refused():
    """JAX without 64-bit mode hands back int32 for int64: Philox would be truncated, so it refuses."""

    class Narrowing:
        __name__ = "narrowing"

        def __getattr__(self, name):
            return getattr(np_xp, name)

        def arange(self, *args, dtype=None, device=None):
            return np_xp.arange(*args, dtype=np_xp.int32, device=device)

    with pytest.raises(ValueError, match="int64"):
        list(bernoulli_steps(Narrowing(), [(4, 4)], 0.5, seed=0, stream=0, first_step=0))
    with pytest.raises(ValueError, match="int64"):
        random_bits(Narrowing(), 8, seed=0, stream=0, step=0)


# ------------------------------------------------------------------ determinism


def test_determinism(xp):
    kw = dict(seed=42, stream=2, step=10)
    base = to_numpy(bernoulli(xp, (128, 100), 0.5, **kw))
    np.testing.assert_array_equal(base, to_numpy(bernoulli(xp, (128, 100), 0.5, **kw)))
    for change in [dict(step=11), dict(stream=1), dict(seed=43), dict(seed=42 + 2**32)]:
        other = to_numpy(bernoulli(xp, (128, 100), 0.5, **{**kw, **change}))
        assert (other != base).any(), change
    u = to_numpy(uniform(xp, 1000, dtype=xp.float64, **kw))
    np.testing.assert_array_equal(u, to_numpy(uniform(xp, 1000, dtype=xp.float64, **kw)))
    assert (u != to_numpy(uniform(xp, 1000, dtype=xp.float64, **{**kw, "step": 11}))).any()


def test_stream_and_step_never_share_counters():
    """The words of (stream, step) are counter words 3 and 2: no overlap, even when one
    stream's step equals another's stream or index."""
    a = random_bits(np_xp, 64, seed=1, stream=0, step=1)
    b = random_bits(np_xp, 64, seed=1, stream=1, step=0)
    c = random_bits(np_xp, 64, seed=1, stream=0, step=0)
    assert len({tuple(a.tolist()), tuple(b.tolist()), tuple(c.tolist())}) == 3
    assert not set(a.tolist()) & set(b.tolist())


# ------------------------------------------------------------------ edge cases and errors


def test_edge_shapes(xp):
    kw = dict(seed=0, stream=0, step=0)
    assert random_bits(xp, 0, **kw).shape == (0,)
    assert uniform(xp, (0, 3), dtype=xp.float32, **kw).shape == (0, 3)
    assert uniform(xp, (), dtype=xp.float64, **kw).shape == ()
    assert bernoulli(xp, (), 0.5, **kw).shape == ()
    assert bernoulli(xp, (5, 0), 0.3, **kw).shape == (5, 0)
    for n in (1, 2, 3, 5, 31, 33, 63):
        assert bernoulli(xp, n, 0.5, **kw).shape == (n,)
        assert uniform(xp, n, dtype=xp.float64, **kw).shape == (n,)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seed=-1, stream=0, step=0),
        dict(seed=2**64, stream=0, step=0),
        dict(seed=0, stream=2**32, step=0),
        dict(seed=0, stream=0, step=-1),
        dict(seed=0.5, stream=0, step=0),
    ],
)
def test_bad_seed_stream_step(kwargs):
    with pytest.raises((ValueError, TypeError)):
        random_bits(np_xp, 4, **kwargs)


def test_bad_arguments():
    kw = dict(seed=0, stream=0, step=0)
    for p in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError):
            bernoulli(np_xp, 4, p, **kw)
    with pytest.raises(ValueError):
        uniform(np_xp, 4, dtype=np_xp.int64, **kw)
    with pytest.raises(ValueError):
        random_bits(np_xp, -1, **kw)
    with pytest.raises(ValueError):
        philox4x32(np_xp, (0, 0, 0, 2**32), (0, 0))
    with pytest.raises(ValueError):
        philox4x32(np_xp, (0, 0, 0, 0), (0, 0), rounds=0)


# ------------------------------------------------------------------ statistics
# Bits are identical on every backend (tested above), so the statistics run on numpy only.
# Every threshold is a fixed quantile that a correct generator fails with probability
# about 1e-6 or less (6 sigma for normal statistics: two-sided 2e-9).

N_STAT = 2**20  # >= 10**6 draws
SIGMA = 6.0
# Chi-square with 255 degrees of freedom: P(X > 377.08) = 1e-6 and P(X < 161.65) = 1e-6
# (regularised incomplete gamma, solved by bisection; cf. Wilson-Hilferty: 377.2 / 161.5).
CHI2_255_UPPER_1E6 = 377.08
CHI2_255_LOWER_1E6 = 161.65


def _corr(a, b):
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / math.sqrt((a * a).sum() * (b * b).sum()))


def test_uniform_moments():
    for dtype in (np_xp.float32, np_xp.float64):
        u = uniform(np_xp, N_STAT, seed=2024, stream=0, step=0, dtype=dtype).astype(np.float64)
        assert u.min() >= 0.0 and u.max() < 1.0
        # mean of U[0,1): 1/2, sd sqrt(1/12/N); variance 1/12, sd sqrt(1/180/N)
        assert abs(u.mean() - 0.5) < SIGMA * math.sqrt(1 / 12 / N_STAT)
        assert abs(u.var() - 1 / 12) < SIGMA * math.sqrt(1 / 180 / N_STAT)


def test_chi_square_on_byte_values():
    words = random_bits(np_xp, N_STAT, seed=31337, stream=5, step=1)
    for byte in range(4):  # each byte position of the word separately
        values = (words >> (8 * byte)) & 0xFF
        counts = np.bincount(values, minlength=256)
        expected = N_STAT / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert CHI2_255_LOWER_1E6 < chi2 < CHI2_255_UPPER_1E6, (byte, chi2)


def test_every_bit_is_balanced():
    words = random_bits(np_xp, N_STAT, seed=8, stream=0, step=0)
    ones = ((words[:, None] >> np.arange(32)) & 1).mean(axis=0)
    assert np.all(np.abs(ones - 0.5) < SIGMA * 0.5 / math.sqrt(N_STAT)), ones


def test_no_correlation_between_steps_streams_seeds_or_neighbours():
    limit = SIGMA / math.sqrt(N_STAT)  # r ~ N(0, 1/N) for independent uniforms
    kw = dict(seed=77, dtype=np_xp.float64)
    base = uniform(np_xp, N_STAT, stream=2, step=1000, **kw)
    others = {
        "next step": uniform(np_xp, N_STAT, stream=2, step=1001, **kw),
        "previous step": uniform(np_xp, N_STAT, stream=2, step=999, **kw),
        "next stream": uniform(np_xp, N_STAT, stream=3, step=1000, **kw),
        "stream 0": uniform(np_xp, N_STAT, stream=0, step=1000, **kw),
        "swapped stream/step": uniform(np_xp, N_STAT, stream=1000, step=2, **kw),
        "next seed": uniform(np_xp, N_STAT, seed=78, stream=2, step=1000, dtype=np_xp.float64),
    }
    for name, other in others.items():
        assert abs(_corr(base, other)) < limit, name
    for lag in (1, 2, 4):
        assert abs(_corr(base[:-lag], base[lag:])) < limit, f"lag {lag}"
    # raw words of consecutive counters: correlation of word j of block i and block i+1
    w = random_bits(np_xp, N_STAT, seed=77, stream=2, step=1000).reshape(-1, 4)
    w = w.astype(np.float64)
    for j in range(4):
        assert abs(_corr(w[:-1, j], w[1:, j])) < SIGMA / math.sqrt(w.shape[0]), j
        for k in range(j + 1, 4):
            assert abs(_corr(w[:, j], w[:, k])) < SIGMA / math.sqrt(w.shape[0]), (j, k)


@pytest.mark.parametrize("p", [0.5, 0.25, 0.3, 0.9])
def test_bernoulli_frequency(p):
    mask = bernoulli(np_xp, (1024, 1024), p, seed=3, stream=2, step=0)
    n = mask.size
    assert abs(mask.mean() - p) < SIGMA * math.sqrt(p * (1 - p) / n)


def test_bernoulli_half_is_balanced_per_bit_and_independent_across_steps():
    n = 1024 * 1024
    masks = [bernoulli(np_xp, n, 0.5, seed=3, stream=2, step=s) for s in range(3)]
    # each of the 32 bit-fields feeds one contiguous block of n/32 samples (field-major)
    per_field = masks[0].reshape(32, -1).mean(axis=1)
    assert np.all(np.abs(per_field - 0.5) < SIGMA * 0.5 / math.sqrt(n / 32)), per_field
    # consecutive steps: masks agree on half of the units, as independent masks would
    for a, b in zip(masks, masks[1:]):
        assert abs((a == b).mean() - 0.5) < SIGMA * 0.5 / math.sqrt(n)
    # dropout at stream 2 is unrelated to the same step at stream 1
    other = bernoulli(np_xp, n, 0.5, seed=3, stream=1, step=0)
    assert abs((masks[0] == other).mean() - 0.5) < SIGMA * 0.5 / math.sqrt(n)


def test_no_two_batches_of_a_run_share_a_step_or_a_mask(monkeypatch):
    """The random source's masks, drawn as the trainer draws them (one ``keep_masks`` per epoch, zipped with the
    batches), are ``bernoulli_steps`` from the source's step, and every batch of the run has a step and a mask
    of its own: an epoch's last batch never repeats the next epoch's first."""
    from portable_cnn import rng

    backend = backend_or_skip("numpy")
    steps = []

    def recording(xp, shapes, p, *, first_step, **kwargs):
        steps.extend(first_step + i for i in range(len(shapes)))
        return bernoulli_steps(xp, shapes, p, first_step=first_step, **kwargs)

    monkeypatch.setattr(rng.philox, "bernoulli_steps", recording)
    random = rng.PortableRandom(backend, 7)
    shapes = [(16, 50)] * 3  # equal batches, as with --batch-size 100 on 1000 images: a shared step is a shared mask
    masks = []
    for _ in range(4):  # epochs
        first_step = random.step
        drawn = [to_numpy(mask) for _, mask in zip(shapes, random.keep_masks(shapes, 0.5))]
        want = bernoulli_steps(np_xp, shapes, 0.5, seed=7, stream=0, first_step=first_step)
        _assert_same_masks(drawn, list(want))
        masks += drawn
    assert len(steps) == len(masks) == 12 and len(set(steps)) == 12, steps
    assert len({mask.tobytes() for mask in masks}) == 12
