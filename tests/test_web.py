"""The page's server and its JSON API, through the real command line (``portable-cnn serve`` and ``train --live``)
and plain HTTP: the model, predictions that agree with ``predict`` and with an independent computation, the epochs
as Server-Sent Events, and a JSON 4xx for every bad request (the server serving on after each)."""

import json
import os
import re
import select
import socket
import stat

import numpy as np
import pytest

from portable_cnn import Config, checkpoint, get_backend, train
from portable_cnn.digits import read_digits
from portable_cnn.web import server
from portable_cnn.web.live import Board, Publish
from portable_cnn.web.snapshot import Snapshot

from .serving import NO_ANSWER, URL, Served, connect, events, get_json, post_json, request
from .test_cli import assert_one_line_error, run_cli

TRAIN = ("train", "--epochs", "3", "--train-size", "256", "--test-size", "300", "--threads", "1")


def seven(height: int = 120, width: int = 96) -> np.ndarray:
    """A hand-drawn-like 7 in 0-255 gray, light on dark: a bar and a slanted stroke, 9 pixels thick."""
    image = np.zeros((height, width), dtype=np.uint8)
    rows, cols = np.indices(image.shape)
    for (r0, c0), (r1, c1) in [((20, 15), (18, 80)), ((18, 80), (105, 38))]:
        for t in np.linspace(0, 1, 200):
            r, c = r0 + t * (r1 - r0), c0 + t * (c1 - c0)
            image[(rows - r) ** 2 + (cols - c) ** 2 <= 20] = 255
    return image


def test_model_gives_shapes_recipe_epochs_and_every_kernel_weight(served, small_run):
    saved = checkpoint.load(small_run)
    model = get_json(served.url, "/api/model")
    assert (model["kernel_size"], model["num_kernels"], model["positions"], model["epochs_done"]) == (3, 16, 26, 3)
    assert model["recipe"] == saved.recipe
    # kernels[k][i][j]: kernel k's weight at row i, column j of its 3x3 window (the kernels array's row i*3+j)
    assert [[[model["kernels"][k][i][j] for j in range(3)] for i in range(3)] for k in range(16)] == [
        [[float(saved.params["kernels"][i * 3 + j, k]) for j in range(3)] for i in range(3)] for k in range(16)
    ]


def test_a_drawing_gets_what_predict_gives_a_picture_of_it(served, small_run, tmp_path):
    from PIL import Image  # here, not at the top: the GPU check's image has no Pillow and collects every file

    picture = tmp_path / "seven.png"
    Image.fromarray(seven()).save(picture)
    result = run_cli("predict", "--checkpoint", str(small_run), "--json", str(picture))
    assert result.returncode == 0, result.stderr
    expected = json.loads(result.stdout)[0]
    status, answer = post_json(served.url, "/api/predict", {"pixels": seven().tolist()})
    assert status == 200, answer
    assert answer["digit"] == expected["digit"]
    assert [round(p, 6) for p in answer["probabilities"]] == expected["probabilities"]
    assert np.array_equal(np.asarray(answer["input"], dtype=np.float32), read_digits(picture)[0])


@pytest.mark.parametrize(
    "variant",
    [lambda image: image / 255, lambda image: 255 - image, lambda image: 1 - image / 255],
    ids=["0-1", "dark-on-light", "dark-on-light-0-1"],
)
def test_the_same_drawing_in_any_range_or_polarity_gets_the_same_answer(served, variant):
    _, light_on_dark = post_json(served.url, "/api/predict", {"pixels": seven().tolist()})
    status, answer = post_json(served.url, "/api/predict", {"pixels": variant(seven().astype(np.float64)).tolist()})
    assert status == 200 and answer == light_on_dark


def test_maps_and_contributions_match_an_independent_computation(served, small_run):
    """maps[k] is tanh of kernel k slid over the input; contributions[k][c] the sum over positions of map k times
    its dense weights for class c (the weights' rows ordered row, column, kernel), and the K shares add up to the
    class's score (so softmax of their sums gives the probabilities). Computed here with plain loops in float64."""
    saved = checkpoint.load(small_run)
    kernels, weights = saved.params["kernels"].astype(np.float64), saved.params["weights"].astype(np.float64)
    _, answer = post_json(served.url, "/api/predict", {"pixels": seven().tolist()})
    image = np.asarray(answer["input"], dtype=np.float64)
    maps = np.zeros((16, 26, 26))
    shares = np.zeros((16, 10))
    for k in range(16):
        kernel = kernels[:, k].reshape(3, 3)
        for r in range(26):
            for c in range(26):
                maps[k, r, c] = np.tanh(np.sum(image[r : r + 3, c : c + 3] * kernel))
                shares[k] += maps[k, r, c] * weights[(r * 26 + c) * 16 + k]
    assert np.allclose(answer["maps"], maps, atol=1e-5)
    assert np.allclose(answer["contributions"], shares, atol=1e-4)
    scores = np.sum(answer["contributions"], axis=0)
    probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    assert np.allclose(answer["probabilities"], probabilities, atol=1e-6)
    assert answer["digit"] == int(np.argmax(shares.sum(axis=0)))


def test_history_and_events_replay_the_runs_epochs_then_done(served, small_run):
    saved = checkpoint.load(small_run)
    expected = [{name: row[name] for name in ("epoch", "test_acc", "train_acc", "loss")} for row in saved.history]
    assert get_json(served.url, "/api/history") == expected
    assert list(events(served.url)) == [("epoch", str(row["epoch"]), row) for row in expected] + [("done", None, {})]
    assert list(events(served.url, last_event_id="1")) == [("epoch", "2", expected[2]), ("done", None, {})]


def raw(url, method, path, headers=(), body=b""):
    """A request written header by header, so that it can lie (a false Host or Content-Length, or none: a header
    given as None is left out): (status, content type, body)."""
    connection = connect(url)
    try:
        connection.putrequest(method, path, skip_host="Host" in dict(headers), skip_accept_encoding=True)
        for name, value in headers:
            if value is not None:
                connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def post(body: bytes):
    return ("POST", "/api/predict", [("Content-Length", str(len(body)))], body)


BAD_REQUESTS = {
    "not JSON": (400, post(b"{pixels")),
    "not UTF-8": (400, post(b'{"pixels": "\xff"}')),
    "NaN": (400, post(b'{"pixels": [[NaN, 1]]}')),
    "infinity": (400, post(b'{"pixels": [[1e999, 1]]}')),
    "not an object": (400, post(b"[[1, 2], [3, 4]]")),
    "no pixels": (400, post(b'{"image": [[1]]}')),
    "1-D": (400, post(b'{"pixels": [1, 2, 3]}')),
    "3-D": (400, post(b'{"pixels": [[[1, 2]]]}')),
    "ragged rows": (400, post(b'{"pixels": [[1, 2], [3]]}')),
    "no rows": (400, post(b'{"pixels": []}')),
    "strings": (400, post(b'{"pixels": [["a", "b"]]}')),
    "negative": (400, post(b'{"pixels": [[-1, 5]]}')),
    "over 255": (400, post(b'{"pixels": [[300, 5]]}')),
    "empty drawing": (400, post(json.dumps({"pixels": [[0] * 20] * 20}).encode())),
    "nested too deep": (400, post(b'{"pixels": ' + b"[" * 100000 + b"]" * 100000 + b"}")),
    "over 1 MiB": (413, ("POST", "/api/predict", [("Content-Length", str(2**20 + 1))], b'{"pixels": ')),
    "no Content-Length": (411, ("POST", "/api/predict", [], b"")),
    "false Content-Length": (400, ("POST", "/api/predict", [("Content-Length", "ten")], b"")),
    "unknown path": (404, ("GET", "/nope", [], b"")),
    "a package file": (404, ("GET", "/cli.py", [], b"")),
    "dot-dot": (404, ("GET", "/../pyproject.toml", [], b"")),
    "encoded dot-dot": (404, ("GET", "/%2e%2e/web/server.py", [], b"")),
    "static folder": (404, ("GET", "/static/app.js", [], b"")),
    "POST to a GET path": (405, ("POST", "/api/model", [("Content-Length", "0")], b"")),
    "POST to an unknown path": (404, ("POST", "/api/nope", [("Content-Length", "0")], b"")),
    "GET of the POST path": (405, ("GET", "/api/predict", [], b"")),
    "PUT": (405, ("PUT", "/", [("Content-Length", "0")], b"")),
    "foreign Host": (403, ("GET", "/api/model", [("Host", "evil.example:8000")], b"")),
    "foreign Host, no port": (403, ("GET", "/", [("Host", "rebound.example")], b"")),
    "no Host": (403, ("GET", "/api/model", [("Host", None)], b"")),
    "false Last-Event-ID": (400, ("GET", "/api/events", [("Last-Event-ID", "abc")], b"")),
}


@pytest.mark.parametrize(("status", "sent"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_a_bad_request_gets_a_json_4xx_and_the_server_serves_on(served, status, sent):
    answer = raw(served.url, *sent)
    assert answer[0] == status and answer[1] == "application/json", answer
    error = json.loads(answer[2])["error"]
    assert isinstance(error, str) and error
    assert get_json(served.url, "/api/model")["epochs_done"] == 3


@pytest.mark.parametrize(
    "sent",
    [b"NOT A REQUEST AT ALL\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"],
    ids=["garbage", "HTTP/9.9", "path too long"],
)
def test_a_broken_request_line_gets_a_json_4xx(served, sent):
    connection = connect(served.url)
    with socket.create_connection((connection.host, connection.port), timeout=NO_ANSWER) as raw_socket:
        raw_socket.sendall(sent)
        answer = raw_socket.makefile("rb").read()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.0 4\d\d ", head) and b"Content-Type: application/json" in head, answer
    assert json.loads(body)["error"]
    assert get_json(served.url, "/api/model")["epochs_done"] == 3


def test_the_page_and_its_files_are_served_from_the_package(served):
    status, kind, page = request(served.url, "GET", "/")
    assert status == 200 and kind.startswith("text/html")
    for name in re.findall(rb'(?:src|href)="([^"]+)"', page):
        assert not name.startswith((b"http", b"//")), name  # nothing from a CDN
        if name != b"data:,":  # the empty icon, so that the browser asks for no favicon.ico
            assert request(served.url, "GET", "/" + name.decode())[0] == 200, name


def test_train_live_serves_the_run_epoch_by_epoch_and_prints_what_train_prints(mnist_dir, tmp_path):
    plain = run_cli(*TRAIN, "--save", str(tmp_path / "plain.npz"), data_dir=mnist_dir)
    live = Served(*TRAIN, "--save", str(tmp_path / "live.npz"), "--live", "--port", "0",
                  env={"PORTABLE_CNN_DATA_DIR": str(mnist_dir)})  # fmt: skip
    try:
        seen = [(kind, number) for kind, number, _ in events(live.url)]
        assert seen == [("epoch", "0"), ("epoch", "1"), ("epoch", "2"), ("done", None)]
        assert get_json(live.url, "/api/model")["epochs_done"] == 3
        live.stderr += live.read_stderr_until(re.compile("still serving"))
        assert "training ended; still serving" in live.stderr and URL.search(live.stderr.splitlines()[-1])
    finally:
        status, stdout, stderr = live.interrupt()
    assert status == 0 and "Traceback" not in stderr, stderr
    assert stdout == plain.stdout
    first, second = checkpoint.load(tmp_path / "plain.npz"), checkpoint.load(tmp_path / "live.npz")
    assert first.params.keys() == second.params.keys()
    assert all(np.array_equal(first.params[name], second.params[name]) for name in first.params)


def test_ctrl_c_during_live_training_saves_and_ends_with_130(mnist_dir, tmp_path):
    live = Served("train", "--epochs", "1000", "--train-size", "256", "--test-size", "100", "--threads", "1",
                  "--save", str(tmp_path / "run.npz"), "--live", "--port", "0",
                  env={"PORTABLE_CNN_DATA_DIR": str(mnist_dir)})  # fmt: skip
    try:
        next(event for event in events(live.url) if event[0] == "epoch")  # training is under way
    finally:
        status, _, stderr = live.interrupt()
    assert status == 130, stderr
    assert "resume with: portable-cnn train --resume" in stderr
    assert checkpoint.load(tmp_path / "run.npz").epoch < 1000


def test_another_host_than_loopback_gets_a_warning(small_run):
    served = Served("serve", "--checkpoint", str(small_run), "--port", "0", "--host", "0.0.0.0")
    status, _, stderr = served.interrupt()
    assert status == 0
    assert re.search(r"^portable-cnn: warning: --host 0\.0\.0\.0 lets other machines", stderr, re.MULTILINE), stderr
    assert served.url.startswith("http://0.0.0.0:")


def test_the_default_host_is_loopback_and_prints_no_warning(served):
    assert served.url.startswith("http://127.0.0.1:")
    assert "warning" not in served.stderr


def test_a_port_in_use_is_one_line(small_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--checkpoint", str(small_run), "--port", str(port))
    assert_one_line_error(result, f"127.0.0.1:{port}", "--port")


@pytest.mark.parametrize("flag", [["--port", "0"], ["--host", "localhost"], ["--open"]])
def test_page_flags_without_live_are_refused(flag):
    assert_one_line_error(run_cli("train", *flag), "add --live")


def test_serve_refuses_a_missing_checkpoint_in_one_line(tmp_path):
    assert_one_line_error(run_cli("serve", "--checkpoint", str(tmp_path / "none.npz")), "no checkpoint")


def test_open_hands_the_url_to_the_browser(small_run, tmp_path):
    opened = tmp_path / "opened"  # a FIFO: the fake browser writes the URL it was given, the test waits to read it
    os.mkfifo(opened)
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    # Opened for writing too: select then waits for the URL, never for an end of file with no writer yet (which
    # would close the reader, block the browser's open and so the server in webbrowser.open, as CI once saw).
    reader = os.open(opened, os.O_RDWR | os.O_NONBLOCK)
    served = Served("serve", "--checkpoint", str(small_run), "--port", "0", "--open", env={"BROWSER": str(browser)})
    try:
        ready, _, _ = select.select([reader], [], [], NO_ANSWER)
        given = os.read(reader, 4096).decode() if ready else ""
    finally:
        os.close(reader)
        served.interrupt()
    assert given.strip() == served.url


def test_events_ping_while_no_epoch_ends(small_run):
    snapshot = Snapshot.of(checkpoint.load(small_run).to_model(get_backend("numpy")), {}, 0)
    page = server.start(Board(snapshot), "127.0.0.1", 0, ping_seconds=0.01)
    try:
        stream = events(page.url)
        assert [next(stream), next(stream)] == [("comment", None, "ping")] * 2
    finally:
        page.shutdown()
        page.server_close()


def test_a_board_publishes_each_epoch_and_done(mnist):
    board = Board()
    train(Config(epochs=2, train_size=128, test_size=100, quiet=True), mnist, callbacks=(Publish(board),))
    epochs, done = board.news(after=-1, timeout=0)
    assert [row["epoch"] for row in epochs] == [0, 1] and done
    assert board.snapshot.epochs_done == 2
