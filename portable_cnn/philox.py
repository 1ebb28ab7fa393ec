"""Philox-4x32-10, a counter-based random generator written once on the Python array API.

Same seed, same model on every backend: the random numbers the default recipe needs (kernel
and weight initialisation, one dropout mask per batch) are pure functions of
``(seed, stream, step, index)``, computed on the device with the backend's own arrays, with
no generator state, no host transfer and no synchronisation. NumPy, PyTorch, CuPy and
array-api-strict give bit-identical words, floats and masks.

The generator is Philox-4x32 with 10 rounds from J. K. Salmon, M. A. Moraes, R. O. Dror and
D. E. Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11 (the Random123 library);
:func:`philox4x32` reproduces Random123's published known-answer vectors (``kat_vectors``).

Counter layout used by :func:`random_bits`::

    counter = (block index low 32 bits, block index high 32 bits, step, stream)
    key     = (seed low 32 bits, seed high 32 bits)

Each block (one Philox call) yields four 32-bit words; the ``n`` words of a request are the
words of blocks ``0, 1, ...`` in order, so a shorter request is a prefix of a longer one.
``stream`` separates uses (e.g. 0 = kernel init, 1 = weight init, 2 = dropout) and ``step`` is
the batch counter: distinct ``(stream, step)`` pairs occupy distinct counter words and never
overlap, whatever the sizes requested. :func:`bernoulli_steps` gives the masks of many
consecutive steps (an epoch's batches) from one Philox call.

Portability. The standard has ``uint32`` but PyTorch lacks full ``uint32`` arithmetic, and the
standard leaves integer overflow unspecified, so one formulation is used on every backend:
32-bit words are held in ``int64`` arrays (values in ``[0, 2**32)``) and the 32x32->64-bit
multiply of a Philox round is split into 16-bit halves of the (constant) multiplier, so that
no intermediate exceeds 2**49 and nothing ever overflows. Only standard functions and
operators are used; this module imports no array library.
"""

from __future__ import annotations

import math
import operator
from fractions import Fraction

__all__ = [
    "PHILOX_M4x32_0",
    "PHILOX_M4x32_1",
    "PHILOX_W32_0",
    "PHILOX_W32_1",
    "philox4x32",
    "random_bits",
    "uniform",
    "bernoulli_steps",
]

MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF

# Random123 constants (philox.h): round multipliers and Weyl key increments.
PHILOX_M4x32_0 = 0xD2511F53
PHILOX_M4x32_1 = 0xCD9E8D57
PHILOX_W32_0 = 0x9E3779B9  # golden ratio
PHILOX_W32_1 = 0xBB67AE85  # sqrt(3) - 1

# bernoulli_steps(): a probability p = k / 2**m with m <= this (exact p), m bits per sample.
MAX_DYADIC_BITS = 16


def _mulhilo(x, m):
    """(hi, lo) 32-bit halves of ``x * m`` for ``x`` in [0, 2**32) and a constant 32-bit ``m``.

    ``x`` is an int64 array or a Python int. For arrays the multiplier is split as
    ``m = mh * 2**16 + ml``: ``x*mh`` and ``x*ml`` are below 2**48 and every sum below 2**49,
    so the result is exact in int64 on any backend, overflow or not.
    """
    if isinstance(x, int):
        p = x * m
        return p >> 32, p & MASK32
    mh, ml = m >> 16, m & _MASK16
    pl = x * ml  # < 2**48
    ph = x * mh  # < 2**48
    lo = ph & _MASK16
    lo <<= 16
    lo += pl  # < 2**49
    lo &= MASK32
    pl >>= 16
    ph += pl  # = floor(x * m / 2**16) < 2**49
    ph >>= 16  # = floor(x * m / 2**32)
    return ph, lo


def _xor(a, b):
    """a ^ b, in place on ``a`` when ``a`` is a fresh array (never a caller's array)."""
    if isinstance(a, int) and not isinstance(b, int):
        return b ^ a
    a ^= b
    return a


def _check_word(name, value, bits=32):
    value = operator.index(value)
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{name} must be an integer in [0, 2**{bits}), got {value}")
    return value


def philox4x32(xp, counter, key, rounds=10):
    """Philox-4x32-``rounds`` block function, elementwise over the counter arrays.

    counter: tuple of 4 int64 arrays (values in ``[0, 2**32)``, broadcastable together);
        Python ints are accepted in any position and are handled on the host (a constant
        counter word costs nothing). Array values are not range-checked (that would need a
        device synchronisation).
    key: tuple of 2 Python ints in ``[0, 2**32)``.
    Returns a tuple of 4 int64 arrays with values in ``[0, 2**32)``, of the broadcast shape of
    the counter words.
    """
    if len(counter) != 4 or len(key) != 2:
        raise ValueError("philox4x32 takes a counter of 4 words and a key of 2 words")
    rounds = operator.index(rounds)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    c0, c1, c2, c3 = (c if hasattr(c, "shape") else _check_word("counter word", c) for c in counter)
    k0, k1 = (_check_word("key word", k) for k in key)
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W32_0) & MASK32
            k1 = (k1 + PHILOX_W32_1) & MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M4x32_0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M4x32_1)
        # Random123: out = {hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0}
        if isinstance(c1, int):
            n0 = _xor(hi1, c1 ^ k0)
        else:
            n0 = _xor(_xor(hi1, c1), k0) if k0 else _xor(hi1, c1)
        if isinstance(c3, int):
            n2 = _xor(hi0, c3 ^ k1)
        else:
            n2 = _xor(_xor(hi0, c3), k1) if k1 else _xor(hi0, c3)
        c0, c1, c2, c3 = n0, lo1, n2, lo0
    out = (c0, c1, c2, c3)
    arrays = [o for o in out if not isinstance(o, int)]
    if not arrays:  # an all-int counter: 0-d arrays on the default device
        return tuple(xp.asarray(o, dtype=xp.int64) for o in out)
    if len(arrays) < 4 or any(o.shape != arrays[0].shape for o in arrays):
        shape = xp.broadcast_arrays(*arrays)[0].shape if len(arrays) > 1 else arrays[0].shape
        device = arrays[0].device
        out = tuple(
            xp.full(shape, o, dtype=xp.int64, device=device) if isinstance(o, int) else xp.broadcast_to(o, shape)
            for o in out
        )
    return out


def _seed_key(seed):
    seed = _check_word("seed", seed, bits=64)
    return (seed & MASK32, seed >> 32)


def _int64_arange(xp, start, stop, step=1, *, device):
    """``arange(start, stop, step)`` as int64 on ``device``; refuses a library that narrows int64 silently."""
    values = xp.arange(start, stop, step, dtype=xp.int64, device=device)
    if values.dtype != xp.int64:  # e.g. JAX without 64-bit mode: the words would be truncated
        raise ValueError(f"Philox needs int64 arrays, but {xp.__name__} gave {values.dtype}; enable 64-bit integers")
    return values


def _blocks(xp, nblocks, *, seed, stream, step, device):
    """The 4 output words of blocks 0..nblocks-1, as 4 int64 arrays of shape (nblocks,)."""
    key = _seed_key(seed)
    stream = _check_word("stream", stream)
    step = _check_word("step", step)
    idx = _int64_arange(xp, 0, nblocks, device=device)
    if nblocks <= (1 << 32):
        lo, hi = idx, 0
    else:
        lo, hi = idx & MASK32, idx >> 32
    return philox4x32(xp, (lo, hi, step, stream), key)


def _count(n):
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return n


def random_bits(xp, n, *, seed, stream, step, device=None):
    """``n`` 32-bit random words as an int64 array of shape ``(n,)``, values in ``[0, 2**32)``.

    counter = (index low32, index high32, step, stream), key = (seed low32, seed high32):
    ``seed`` in ``[0, 2**64)``, ``stream`` and ``step`` in ``[0, 2**32)``. Word ``4*i + j`` is
    output word ``j`` of block ``i``.
    """
    n = _count(n)
    nblocks = -(-n // 4)
    words = _blocks(xp, nblocks, seed=seed, stream=stream, step=step, device=device)
    bits = xp.reshape(xp.stack(words, axis=1), (4 * nblocks,))
    return bits if n == 4 * nblocks else bits[:n]


def _shape(shape):
    if isinstance(shape, int) or not hasattr(shape, "__len__"):
        shape = (shape,)
    shape = tuple(operator.index(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must have non-negative sizes, got {shape}")
    return shape, math.prod(shape)


def uniform(xp, shape, *, seed, stream, step, dtype, device=None):
    """Floats in ``[0, 1)`` of the given shape and dtype (``xp.float32`` or ``xp.float64``).

    float32: the top 24 bits of one word, ``(w >> 8) * 2**-24`` (every multiple of 2**-24).
    float64: 53 bits of two consecutive words ``a, b``, ``((a >> 5) * 2**26 + (b >> 6)) * 2**-53``
    (the classic ``genrand_res53`` construction). Both are exact: no rounding, never 1.0.
    """
    shape, n = _shape(shape)
    if dtype == xp.float32:
        words = random_bits(xp, n, seed=seed, stream=stream, step=step, device=device)
        words >>= 8  # a fresh array unless n % 4 != 0 (then a view of a fresh array)
        u = xp.astype(words, xp.float32)
        u *= 2.0**-24
    elif dtype == xp.float64:
        # Float j of block i comes from its words 2j and 2j+1 (= random_bits words 2k, 2k+1
        # for float k); built per block to skip interleaving all the words first.
        nblocks = -(-n // 2)
        x0, x1, x2, x3 = _blocks(xp, nblocks, seed=seed, stream=stream, step=step, device=device)
        pairs = []
        for a, b in ((x0, x1), (x2, x3)):  # fresh arrays: shifted in place
            a >>= 5
            a <<= 26
            b >>= 6
            a |= b
            pairs.append(a)
        u = xp.reshape(xp.stack(pairs, axis=1), (2 * nblocks,))
        if 2 * nblocks != n:
            u = u[:n]
        u = xp.astype(u, xp.float64)
        u *= 2.0**-53
    else:
        raise ValueError(f"uniform supports float32 and float64, got dtype {dtype}")
    return xp.reshape(u, shape)


def _dyadic(p):
    """``(k, m)`` with ``p = k / 2**m``, ``0 < k < 2**m``, ``m <= MAX_DYADIC_BITS``: exact, m bits a sample."""
    if isinstance(p, str):
        raise ValueError(f"p must be a real number in (0, 1), got {p!r}")
    try:
        frac = Fraction(p)
    except (TypeError, ValueError):
        raise ValueError(f"p must be a real number in (0, 1), got {p!r}") from None
    m = frac.denominator.bit_length() - 1
    if not 0 < frac < 1 or frac.denominator != 1 << m or m > MAX_DYADIC_BITS:
        raise ValueError(f"p must be k / 2**m in (0, 1) with m <= {MAX_DYADIC_BITS} (0.5, 0.25, ...), got {p!r}")
    return frac.numerator, m


def _dyadic_keep(xp, words, k, m, *, device):
    """Keep-mask from the m-bit fields of each word, field-major, shape ``(32 // m * nwords,)``.

    Field ``i`` of word ``w`` is bits ``[m*i, m*i + m)``; it gives sample ``i * nwords + w``
    (field-major, so every elementwise op runs over long contiguous rows) and is ``True`` iff
    the field's value is ``< k``, tested without shifting as
    ``word & (2**m - 1) << m*i < k << m*i``. When ``m`` divides 8 the fields are tested on the
    words' four bytes as uint8 (8x less memory traffic than int64; the same bits).
    """
    if 8 % m == 0:
        byte_offsets = _int64_arange(xp, 0, 32, 8, device=device)
        octets = xp.astype((words[None, :] >> byte_offsets[:, None]) & 0xFF, xp.uint8)  # (4, nwords)
        words, per_word, dtype = octets, 8 // m, xp.uint8
    else:
        words, per_word, dtype = words[None, :], 32 // m, xp.int64
    offsets = xp.arange(0, per_word * m, m, dtype=dtype, device=device)
    field_masks = xp.bitwise_left_shift(xp.full((per_word,), (1 << m) - 1, dtype=dtype, device=device), offsets)
    thresholds = xp.bitwise_left_shift(xp.full((per_word,), k, dtype=dtype, device=device), offsets)
    keep = (words[:, None, :] & field_masks[:, None]) < thresholds[:, None]  # (rows, fields, nwords)
    return xp.reshape(keep, (32 // m * words.shape[-1],))


# bernoulli_steps(): at most this many words per Philox call (32 MiB per int64 word array), so
# that peak memory stays bounded on large epochs; the book's protocol (8 batches) takes one call.
WORDS_PER_CALL = 1 << 22


def bernoulli_steps(xp, shapes, p, *, seed, stream, first_step, device=None, words_per_call=WORDS_PER_CALL):
    """The keep-masks of consecutive steps, mask ``i`` of ``shapes[i]`` at step ``first_step + i``, each
    ``True`` with probability ``p = k / 2**m`` exactly (``m <= 16``: 0.5, 0.25, 3/8, ...).

    Mask ``i`` takes ``m`` bits a sample from the words of its step (:func:`random_bits` at
    ``step = first_step + i``): field ``f`` (bits ``[m*f, m*f + m)``) of word ``w`` gives sample
    ``f * nwords + w`` and is ``True`` iff its value is ``< k``. The words of many steps come from
    one Philox call (an epoch's batches: one call instead of one per batch, far fewer kernel
    launches on a GPU). Returns a :class:`KeepMasks` sequence that unpacks each mask only when it
    is indexed or iterated, so one batch's mask is alive at a time.
    """
    shapes_sizes = [_shape(shape) for shape in shapes]
    first_step = _check_word("first_step", first_step)
    if shapes_sizes:
        _check_word("last step (first_step + len(shapes) - 1)", first_step + len(shapes_sizes) - 1)
    words_per_call = operator.index(words_per_call)
    if words_per_call < 4:
        raise ValueError(f"words_per_call must be >= 4, got {words_per_call}")
    return KeepMasks(
        xp,
        shapes_sizes,
        _dyadic(p),
        _seed_key(seed),
        _check_word("stream", stream),
        first_step,
        device,
        words_per_call,
    )


class KeepMasks:
    """The masks of :func:`bernoulli_steps`: a sequence computed in chunks of consecutive steps.

    Each chunk of consecutive steps (all of them when their words fit ``words_per_call``) takes one
    Philox call; the most recent chunk's words are kept, each mask is unpacked when asked for.
    """

    def __init__(self, xp, shapes_sizes, dyadic, key, stream, first_step, device, words_per_call):
        self._xp, self._dyadic, self._key, self._stream = xp, dyadic, key, stream
        self._first_step, self._device = first_step, device
        self._shapes = [shape for shape, _ in shapes_sizes]
        per_word = 32 // dyadic[1]  # samples per word
        self._nwords = [-(-size // per_word) for _, size in shapes_sizes]
        self._sizes = [size for _, size in shapes_sizes]
        nblocks = [-(-n // 4) for n in self._nwords]
        if max(nblocks, default=0) > 1 << 32:  # the block index is counter word 0 alone (32 bits)
            raise ValueError(f"a mask of {4 * max(nblocks)} words exceeds the 2**32 Philox blocks of a step")
        self._chunks = _chunks(nblocks, max(words_per_call // 4, 1))
        self._chunk_of, self._word_start = [], []  # per step: its chunk, where its words begin in it
        for chunk, (first, stop) in enumerate(self._chunks):
            start = 0
            for index in range(first, stop):
                self._chunk_of.append(chunk)
                self._word_start.append(start)
                start += 4 * nblocks[index]  # each step's words start at its block 0
        self._cached = None  # (chunk index, its words in block order: int64 of shape (4 * nblocks,))

    def __len__(self):
        return len(self._shapes)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index):
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"mask {index} of {len(self)}")
        start = self._word_start[index]
        words = self._chunk_words(index)[start : start + self._nwords[index]]
        keep = _dyadic_keep(self._xp, words, *self._dyadic, device=self._device)
        return self._xp.reshape(keep[: self._sizes[index]], self._shapes[index])

    def _chunk_words(self, index):
        """The words of the chunk that holds step ``index`` (made by one Philox call, kept until the next chunk)."""
        chunk = self._chunk_of[index]
        if self._cached is None or self._cached[0] != chunk:
            self._cached = None  # let the previous chunk go before the next is made
            first, stop = self._chunks[chunk]
            self._cached = (chunk, self._philox_words(first, stop))
        return self._cached[1]

    def _philox_words(self, first, stop):
        """The words of steps ``first..stop-1`` (each step's blocks 0, 1, ...), from one Philox call."""
        xp, device = self._xp, self._device
        block_index, step = [], []
        begin = self._first_step + first
        for nblocks, run in _runs([-(-n // 4) for n in self._nwords[first:stop]]):
            grid = (run, nblocks)
            indices = _int64_arange(xp, 0, nblocks, device=device)
            steps = _int64_arange(xp, begin, begin + run, device=device)
            block_index.append(xp.reshape(xp.broadcast_to(indices[None, :], grid), (run * nblocks,)))
            step.append(xp.reshape(xp.broadcast_to(steps[:, None], grid), (run * nblocks,)))
            begin += run
        block_index, step = xp.concat(block_index), xp.concat(step)
        blocks = philox4x32(xp, (block_index, 0, step, self._stream), self._key)
        return xp.reshape(xp.stack(blocks, axis=1), (4 * block_index.shape[0],))


def _runs(counts):
    """``(count, run length)`` for each run of equal consecutive counts."""
    runs = []
    for count in counts:
        if runs and runs[-1][0] == count:
            runs[-1][1] += 1
        else:
            runs.append([count, 1])
    return [tuple(run) for run in runs]


def _chunks(nblocks, limit):
    """``(first, stop)`` ranges of consecutive steps whose blocks total at most ``limit`` (at least one step each)."""
    chunks, first, total = [], 0, 0
    for index, count in enumerate(nblocks):
        if index > first and total + count > limit:
            chunks.append((first, index))
            first, total = index, 0
        total += count
    if first < len(nblocks):
        chunks.append((first, len(nblocks)))
    return chunks
