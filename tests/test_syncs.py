"""No host synchronisation inside the batch loop, proven without a GPU: every conversion of an array to the host
is counted while an epoch's batches run (there must be none), and after them (one stacked read per epoch).

The arrays are array-api-strict's on its emulated "device1"; a conversion is any of ``__bool__``, ``__int__``,
``__float__``, ``__complex__``, ``__index__``, ``__array__``, ``__dlpack__``, ``tolist`` or ``to_device`` to the
CPU: on a GPU each of them waits for the device (``if`` on a device array, ``clip``'s mask on CuPy, ``int()``).
"""

import dataclasses

import array_api_strict as strict
import pytest

from portable_cnn import Callback, Config, train
from portable_cnn.rng import BookRandom, PortableRandom

CPU = strict.Device("CPU_DEVICE")
CONVERSIONS = (
    "__bool__",
    "__int__",
    "__float__",
    "__complex__",
    "__index__",
    "__array__",
    "__dlpack__",
    "tolist",
    "item",
)
SMALL = Config(epochs=3, train_size=300, test_size=200, quiet=True, backend="array-api-strict", device="device1")


class HostReads(Callback):
    """Counts host conversions of device arrays, apart for inside the batch loop (from the epoch's start, where its
    dropout masks are drawn, to its last batch's end) and for the rest of each epoch."""

    def __init__(self):
        self.in_batch, self.inside, self.after, self.epoch_reads = False, [], [], []

    def read(self, name: str) -> None:
        (self.inside if self.in_batch else self.epoch_reads).append(name)

    def on_epoch_begin(self, state):
        self.in_batch = True

    def on_batch_begin(self, state):
        self.in_batch = True

    def on_batch_end(self, state, images):
        self.in_batch = False

    def on_epoch_end(self, state, record):
        self.after.append(self.epoch_reads)
        self.epoch_reads = []


@pytest.fixture
def host_reads(monkeypatch):
    reads = HostReads()
    array = type(strict.asarray(0.0))

    def counted(name, method):
        def conversion(self, *args, **kwargs):
            if self.device != CPU and (name != "to_device" or (args or [kwargs.get("device")])[0] == CPU):
                reads.read(name)
            return method(self, *args, **kwargs)

        return conversion

    for name in (*CONVERSIONS, "to_device"):
        if hasattr(array, name):
            monkeypatch.setattr(array, name, counted(name, getattr(array, name)))
    return reads


def test_the_counter_sees_a_hidden_sync(host_reads):
    x = strict.asarray([1.0, -1.0], device=strict.Device("device1"))
    host_reads.in_batch = True
    if bool(x[0] > 0):
        float(x[1])
    assert host_reads.inside == ["__bool__", "__float__"]


@pytest.mark.parametrize("source", [PortableRandom, BookRandom])
def test_the_epochs_masks_are_drawn_inside_the_watched_loop(mnist, host_reads, monkeypatch, source):
    """The masks of an epoch (one Philox call, or the book's upload) come after ``on_epoch_begin``, where the GPU
    check's guard starts: a host read while drawing them is caught as one inside the batch loop."""
    draw = source.keep_masks

    def draw_and_read(self, shapes, keep_prob):
        masks = draw(self, shapes, keep_prob)
        float(strict.ones((), device=strict.Device("device1")))
        return masks

    monkeypatch.setattr(source, "keep_masks", draw_and_read)
    train(dataclasses.replace(SMALL, epochs=1, book=source is BookRandom), mnist, callbacks=(host_reads,))
    assert host_reads.inside == ["__float__"]


@pytest.mark.parametrize("book", [False, True], ids=["default", "book"])
@pytest.mark.parametrize("test_every", [1, 2])
def test_no_host_read_in_the_batch_loop_and_one_per_epoch(mnist, host_reads, book, test_every):
    history = train(
        dataclasses.replace(SMALL, book=book, test_every=test_every), mnist, callbacks=(host_reads,)
    ).history
    assert len(history) == 3
    assert host_reads.inside == [], f"host reads inside the batch loop: {host_reads.inside}"
    # Per epoch, one read: the stacked figures (correct, loss, whether the parameters are finite for the divergence
    # check, test correct) in one transfer.
    assert host_reads.after == [["to_device"]] * 3


def test_the_live_page_adds_one_host_copy_per_epoch_and_none_in_the_batch_loop(mnist, host_reads):
    from portable_cnn.web.live import Board, Publish

    board = Board()
    train(SMALL, mnist, callbacks=(Publish(board), host_reads))
    assert board.snapshot.epochs_done == 3
    assert host_reads.inside == [], f"host reads inside the batch loop: {host_reads.inside}"
    # The planned reads, then the page's snapshot of the parameters, one transfer each: when training begins (counted
    # with the first epoch) and after each epoch, once its figures were read.
    begin, epoch = ["to_device"] * 2, ["to_device", "to_device", "to_device"]
    assert host_reads.after == [begin + epoch] + [epoch] * 2
