"""MNIST loading: the embedded real files, the other formats, the search order, bad files, downloads."""

import functools
import gzip
import hashlib
import http.server
import io
import os
import pathlib
import shutil
import socket
import struct
import threading

import numpy as np
import pytest

from portable_cnn import cli, datasets
from portable_cnn.datasets import (
    EMBEDDED_SHA256,
    IDX_NAMES,
    Mnist,
    default_cache_dir,
    download_mnist,
    find_mnist,
    load_mnist,
)
from portable_cnn.errors import UserError

GZ_NAMES = [name + ".gz" for name in IDX_NAMES.values()]


def _closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real env var, home, cache or network: everything under tmp_path."""
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "MIRRORS", (_closed_port_url(),))


def write_idx(folder, n_train=3, n_test=2, gz=False, seed=0):
    """Write a tiny valid IDX dataset into folder; return the arrays written."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for (split, part), name in IDX_NAMES.items():
        n = n_train if split == "train" else n_test
        if part == "images":
            arrays[split, part] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            header = struct.pack(">IIII", 2051, n, 28, 28)
        else:
            arrays[split, part] = rng.integers(0, 10, n, dtype=np.uint8)
            header = struct.pack(">II", 2049, n)
        data = header + arrays[split, part].tobytes()
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def assert_one_line(error, *fragments):
    message = str(error.value)
    assert "\n" not in message and message.strip() == message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --- real data ---------------------------------------------------------------------------


def rebuilt_idx(m) -> dict:
    """(split, part) -> the uncompressed IDX bytes of the arrays in `m`."""
    return {
        ("train", "images"): struct.pack(">IIII", 2051, len(m.train_images), 28, 28) + m.train_images.tobytes(),
        ("train", "labels"): struct.pack(">II", 2049, len(m.train_labels)) + m.train_labels.tobytes(),
        ("test", "images"): struct.pack(">IIII", 2051, len(m.test_images), 28, 28) + m.test_images.tobytes(),
        ("test", "labels"): struct.pack(">II", 2049, len(m.test_labels)) + m.test_labels.tobytes(),
    }


def test_reads_the_embedded_files(mnist_dir):
    m = load_mnist()
    assert isinstance(m, Mnist) and m.source == datasets.EMBEDDED_SOURCE
    assert m.train_images.shape == (1000, 28, 28) and m.train_labels.shape == (1000,)
    assert m.test_images.shape == (10000, 28, 28) and m.test_labels.shape == (10000,)
    for a in (m.train_images, m.train_labels, m.test_images, m.test_labels):
        assert a.dtype == np.uint8
    assert m.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    # The arrays rebuild the IDX bytes whose SHA-256 data/README.md publishes, and so do the files.
    readme = (mnist_dir / "README.md").read_text()
    for key, data in rebuilt_idx(m).items():
        assert hashlib.sha256(data).hexdigest() == EMBEDDED_SHA256[key]
        assert EMBEDDED_SHA256[key] in readme
        original = gzip.decompress((mnist_dir / (IDX_NAMES[key] + ".gz")).read_bytes())
        assert original == data


def test_the_embedded_files_are_the_start_of_the_full_ones(full_mnist_dir):
    """Same content, same order: the embedded subset is the first 1000 training and all 10000 test images."""
    full, embedded = load_mnist(full_mnist_dir), load_mnist()
    assert len(full.train_images) > 1000
    np.testing.assert_array_equal(full.train_images[:1000], embedded.train_images)
    np.testing.assert_array_equal(full.train_labels[:1000], embedded.train_labels)
    np.testing.assert_array_equal(full.test_images, embedded.test_images)
    np.testing.assert_array_equal(full.test_labels, embedded.test_labels)


def test_reads_uncompressed_idx(mnist_dir, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in IDX_NAMES.values():
        (plain / name).write_bytes(gzip.decompress((mnist_dir / (name + ".gz")).read_bytes()))
    a, b = load_mnist(plain), load_mnist(mnist_dir)
    assert a.source == str(plain)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_env_var_points_at_the_full_data(full_mnist_dir, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(full_mnist_dir))
    assert find_mnist(train_size=2000).kind == datasets.ENV_VAR
    assert len(load_mnist(download=False, train_size=2000).train_images) > 1000


# --- npz -----------------------------------------------------------------------------------


def write_npz(path, arrays, **overrides):
    content = {
        "x_train": arrays["train", "images"],
        "y_train": arrays["train", "labels"],
        "x_test": arrays["test", "images"],
        "y_test": arrays["test", "labels"],
    }
    content.update(overrides)
    content = {k: v for k, v in content.items() if v is not None}  # None drops an array
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **content)


def test_reads_npz_by_folder_and_by_path(tmp_path):
    arrays = write_idx(tmp_path / "idx", 4, 3)
    npz = tmp_path / "k" / "mnist.npz"
    write_npz(npz, arrays, y_train=arrays["train", "labels"].astype(np.int64))
    for where in (npz.parent, npz):
        m = load_mnist(where)
        assert m.source == str(npz)
        np.testing.assert_array_equal(m.train_images, arrays["train", "images"])
        np.testing.assert_array_equal(m.test_labels, arrays["test", "labels"])
        assert m.train_labels.dtype == np.uint8


def test_reads_keras_npz_from_home(tmp_path):
    arrays = write_idx(tmp_path / "idx", 5, 2)
    write_npz(tmp_path / "home" / ".keras" / "datasets" / "mnist.npz", arrays)
    m = load_mnist(download=False)
    assert m.train_images.shape == (5, 28, 28) and m.source.endswith("mnist.npz")


# --- search order ----------------------------------------------------------------------------


def test_default_cache_dir(tmp_path, monkeypatch):
    assert default_cache_dir() == tmp_path / "cache" / "portable-cnn" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "portable-cnn" / "mnist"


def test_search_order(tmp_path, monkeypatch):
    write_idx(tmp_path / "explicit", n_train=3)
    write_idx(tmp_path / "env", n_train=4, gz=True)
    write_idx(default_cache_dir(), n_train=5)
    write_npz(tmp_path / "home" / ".keras" / "datasets" / "mnist.npz", write_idx(tmp_path / "k", n_train=6))
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    assert len(load_mnist(tmp_path / "explicit").train_images) == 3
    assert len(load_mnist(str(tmp_path / "explicit")).train_images) == 3
    assert len(load_mnist().train_images) == 4
    monkeypatch.delenv(datasets.ENV_VAR)
    assert len(load_mnist().train_images) == 5
    shutil.rmtree(default_cache_dir())
    assert len(load_mnist(download=False).train_images) == 6
    (tmp_path / "home" / ".keras" / "datasets" / "mnist.npz").unlink()
    assert load_mnist(download=False).source == datasets.EMBEDDED_SOURCE
    assert find_mnist(train_size=1000, test_size=10000).kind == "embedded"
    assert find_mnist(train_size=1001).kind == "download"
    assert find_mnist(test_size=10001).kind == "download"


def test_info_names_the_data_source_and_its_images(tmp_path, capsys):
    write_idx(tmp_path / "explicit", n_train=3, n_test=2)
    expected = {
        (): "data: the embedded book subset (",
        (
            "--data-dir",
            str(tmp_path / "explicit"),
        ): f"data: {tmp_path / 'explicit'} (the data directory): 3 training, 2 test images",
        ("--train-size", "2000"): "data: a download of the full MNIST",
    }
    for args, line in expected.items():
        assert cli.main(["info", *args]) == 0
        printed = capsys.readouterr().out.splitlines()[-1]
        assert printed.startswith(line), printed
    assert printed.endswith("(60000 training, 10000 test images), none found locally")
    assert cli.main(["info"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(": 1000 training, 10000 test images")


def test_explicit_and_env_dirs_do_not_fall_through(tmp_path, monkeypatch):
    write_idx(tmp_path / "env")
    write_idx(default_cache_dir())
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(UserError) as e:
        load_mnist(tmp_path / "empty")
    assert_one_line(e, str(tmp_path / "empty"), "no MNIST data", "--data-dir")
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(UserError) as e:
        load_mnist()
    assert_one_line(e, str(tmp_path / "empty"), datasets.ENV_VAR)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(UserError) as e:
        load_mnist()
    assert_one_line(e, str(tmp_path / "nowhere"), "does not exist")


# --- bad input -------------------------------------------------------------------------------


def _rewrite(path, edit):
    path.write_bytes(edit(path.read_bytes()))


def _set_u32(offset, value):
    return lambda data: data[:offset] + struct.pack(">I", value) + data[offset + 4 :]


BAD_IDX = {
    "bad magic": ("train-images-idx3-ubyte", _set_u32(0, 2049), "magic number 2049"),
    "wrong dims": ("t10k-images-idx3-ubyte", _set_u32(8, 32), "32x28"),
    "truncated": ("t10k-images-idx3-ubyte", lambda d: d[:-100], "truncated"),
    "too long": ("train-labels-idx1-ubyte", lambda d: d + b"\0", "too long"),
    "short header": ("train-labels-idx1-ubyte", lambda d: d[:5], "too short"),
    "label out of range": (
        "t10k-labels-idx1-ubyte",
        lambda d: d[:9] + b"\x0c" + d[10:],
        "label 12 at index 1",
    ),
    "count mismatch": (
        "train-labels-idx1-ubyte",
        lambda d: struct.pack(">II", 2049, 2) + d[8:10],
        "3 images but",
    ),
}


@pytest.mark.parametrize("case", BAD_IDX, ids=list(BAD_IDX))
def test_bad_idx_files(tmp_path, case):
    name, edit, fragment = BAD_IDX[case]
    write_idx(tmp_path / "d", n_train=3, n_test=2)
    _rewrite(tmp_path / "d" / name, edit)
    with pytest.raises(UserError) as e:
        load_mnist(tmp_path / "d")
    assert_one_line(e, name, fragment)


@pytest.mark.parametrize("damage", ["garbage", "truncated gzip"])
def test_corrupt_gzip(tmp_path, damage):
    write_idx(tmp_path / "d", gz=True)
    path = tmp_path / "d" / "t10k-images-idx3-ubyte.gz"
    if damage == "garbage":
        path.write_bytes(b"not a gzip file at all")
    else:
        _rewrite(path, lambda d: d[: len(d) // 2])
    with pytest.raises(UserError) as e:
        load_mnist(tmp_path / "d")
    assert_one_line(e, str(path), "cannot read")


def test_missing_file(tmp_path):
    write_idx(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError) as e:
        load_mnist(tmp_path / "d")
    assert_one_line(e, "lacks t10k-labels-idx1-ubyte", str(tmp_path / "d"))


def test_not_an_npz(tmp_path):
    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 broken")
    (tmp_path / "notes.txt").write_text("hi")
    for path, fragment in [(tmp_path / "mnist.npz", "cannot read"), (tmp_path / "notes.txt", "not a .npz")]:
        with pytest.raises(UserError) as e:
            load_mnist(path)
        assert_one_line(e, str(path), fragment)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"x_test": None}, "lacks the arrays x_test"),
        ({"x_train": np.zeros((2, 27, 28), np.uint8)}, "x_train is uint8 (2, 27, 28)"),
        ({"y_test": np.array([0, 10])}, "label 10 at index 1"),
        ({"y_train": np.array([0, 1])}, "expected 3 integer labels"),
    ],
)
def test_bad_npz(tmp_path, overrides, fragment):
    arrays = write_idx(tmp_path / "idx", 3, 2)
    npz = tmp_path / "mnist.npz"
    write_npz(npz, arrays, **overrides)
    with pytest.raises(UserError) as e:
        load_mnist(npz)
    assert_one_line(e, str(npz), fragment)


# --- download ---------------------------------------------------------------------------------


@pytest.fixture
def mirror(mnist_dir, tmp_path):
    """A local HTTP server whose root holds copies of the embedded .gz files; yields its base URL."""
    root = tmp_path / "www" / "mnist"
    root.mkdir(parents=True)
    for name in GZ_NAMES:
        shutil.copy(mnist_dir / name, root / name)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def good_sums(mnist_dir):
    return {name: hashlib.sha256((mnist_dir / name).read_bytes()).hexdigest() for name in GZ_NAMES}


def test_download_installs_into_cache_and_loads(mirror, good_sums, monkeypatch):
    # The first two mirrors fail (closed port, 404): the third one serves the files.
    monkeypatch.setattr(datasets, "MIRRORS", (_closed_port_url(), mirror + "missing/", mirror + "mnist"))
    monkeypatch.setattr(datasets, "GZ_SHA256", good_sums)
    m = load_mnist(train_size=1001)  # more than embedded: downloads
    cache = default_cache_dir()
    assert m.source == str(cache) and m.train_images.shape == (1000, 28, 28) and len(m.test_labels) == 10000
    assert sorted(os.listdir(cache)) == sorted(GZ_NAMES)
    for name, sha in good_sums.items():
        assert hashlib.sha256((cache / name).read_bytes()).hexdigest() == sha
    # Now cached: no network needed.
    monkeypatch.setattr(datasets, "MIRRORS", (_closed_port_url(),))
    assert load_mnist(download=False).source == str(cache)


def test_bad_checksum_leaves_nothing(mirror, good_sums, tmp_path):
    sums = dict(good_sums, **{"t10k-labels-idx1-ubyte.gz": "0" * 64})
    dest = tmp_path / "dl"
    with pytest.raises(UserError) as e:
        download_mnist(dest, mirrors=[mirror + "mnist/"], checksums=sums)
    assert_one_line(e, "t10k-labels-idx1-ubyte.gz", "SHA-256", "nothing was saved")
    assert os.listdir(dest) == []


def test_offline_asking_for_more_than_the_embedded_data_says_what_to_do(tmp_path):
    with pytest.raises(UserError) as e:
        load_mnist(train_size=2000)
    assert_one_line(
        e,
        "--train-size 2000 asks for more than the embedded book subset holds (1000 training",
        "could not download",
        "--data-dir",
        "PORTABLE_CNN_DATA_DIR",
    )
    assert os.listdir(default_cache_dir()) == []
    with pytest.raises(UserError) as e:
        load_mnist(download=False, test_size=20000)
    assert_one_line(e, "--test-size 20000 asks for more", "download is off", "--data-dir", "PORTABLE_CNN_DATA_DIR")


def test_train_offline_asking_for_2000_images_says_what_to_do(capsys):
    assert cli.main(["train", "--epochs", "1", "--train-size", "2000"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert "--train-size 2000 asks for more than the embedded book subset holds" in line and "--data-dir" in line


@pytest.mark.parametrize("key", list(EMBEDDED_SHA256), ids=["-".join(key) for key in EMBEDDED_SHA256])
def test_a_corrupt_embedded_file_is_named_with_its_fault(mnist_dir, tmp_path, monkeypatch, key):
    """One flipped pixel or label in a valid gzip: only the SHA-256 can tell, and the message says so."""
    copy = tmp_path / "embedded"
    shutil.copytree(mnist_dir, copy)
    path = copy / (IDX_NAMES[key] + ".gz")
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[-1] = (data[-1] + 1) % 10
    path.write_bytes(gzip.compress(bytes(data)))
    monkeypatch.setattr(datasets, "EMBEDDED_DIR", copy)
    with pytest.raises(UserError) as e:
        load_mnist()
    assert_one_line(e, str(path), "SHA-256", EMBEDDED_SHA256[key], "corrupt")


def test_download_progress_shows_bytes_and_rate_on_a_terminal():
    """The progress line's arithmetic on a fake clock; nothing is written when stderr is not a terminal."""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    now = [100.0]
    screen = Terminal()
    progress = datasets._Progress("t10k-images-idx3-ubyte.gz", "9912422", stream=screen, clock=lambda: now[0])
    now[0] += 2.0
    progress.add(3_000_000)
    progress.close()
    assert screen.getvalue().splitlines()[-1].endswith("downloading t10k-images-idx3-ubyte.gz: 3.0 of 9.9 MB, 1.5 MB/s")
    piped = io.StringIO()
    quiet = datasets._Progress("x.gz", None, stream=piped, clock=lambda: now[0])
    quiet.add(10)
    quiet.close()
    assert piped.getvalue() == "" and quiet.line().startswith("downloading x.gz: 0.0 MB, ")
