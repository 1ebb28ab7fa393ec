"""The page in a real browser: headless Chromium driven by Playwright draws a digit with the mouse and reads what
the page shows, and watches a ``train --live`` run's curves grow. Skipped, with the reason, only where there is no
Chromium (never in CI: .ci/run installs it and sets PORTABLE_CNN_REQUIRE_BROWSER)."""

import json
import os
import re

import pytest

from portable_cnn import checkpoint

from .serving import NO_ANSWER, SEVEN, Served, stroke

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Debian's Chromium (``playwright install`` downloads a browser and cannot work offline)."""
    if not os.path.exists(CHROMIUM):
        if os.environ.get("PORTABLE_CNN_REQUIRE_BROWSER"):
            pytest.fail(f"no Chromium at {CHROMIUM}, and PORTABLE_CNN_REQUIRE_BROWSER is set")
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium, or set CHROMIUM to one")
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


@pytest.fixture(scope="session")
def expect():
    """Playwright's waiting assertions, imported here so that collecting this file needs no Playwright (the GPU
    check's image has none and collects every file); the timeout only ends a hang."""
    from playwright.sync_api import expect

    expect.set_options(timeout=NO_ANSWER * 1000)
    return expect


@pytest.fixture
def watched(page):
    """The page, failing the test on a script error, a failed request or one that leaves the served site."""
    page.set_default_timeout(NO_ANSWER * 1000)
    problems = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: message.type == "error" and problems.append(f"console: {message.text}"))
    visited = []
    page.on("request", lambda sent: visited.append(sent.url))
    page.on("response", lambda got: got.status >= 400 and problems.append(f"{got.status} {got.url}: {got.text()}"))
    yield page, visited
    assert not problems, problems


def painted(page, selector: str, ground: str) -> int:
    """How many pixels of the canvas at ``selector`` differ from the ``ground`` colour ("white" or "black")."""
    return page.evaluate(
        """([selector, ground]) => {
            const canvas = document.querySelector(selector);
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            const level = ground === "white" ? 255 : 0;
            let count = 0;
            for (let i = 0; i < data.length; i += 4) if (data[i] !== level || data[i + 1] !== level) count++;
            return count;
        }""",
        [selector, ground],
    )


def test_drawing_a_digit_shows_its_input_prediction_ten_bars_maps_and_votes(watched, served, expect):
    page, visited = watched
    page.goto(served.url)
    expect(page.locator("#kernels [data-kernel]")).to_have_count(16)
    expect(page.locator("#maps [data-kernel]")).to_have_count(16)
    assert painted(page, "#maps [data-kernel='0'] canvas", "white") == 0  # nothing drawn, nothing seen
    stroke(page, SEVEN, release=False)
    expect(page.locator("#prediction")).to_have_text(re.compile(r"^\d$"))  # while drawing, before the release
    page.mouse.up()
    page.wait_for_load_state("networkidle")  # the stroke's last answer is in
    with page.expect_response("**/api/predict") as answered:
        stroke(page, [(0.72, 0.22)])  # a dot: every request it makes sends the same drawing
    answer = answered.value.json()
    expect(page.locator("#prediction")).to_have_text(str(answer["digit"]))
    bars = page.locator("#probabilities [data-digit]")
    expect(bars).to_have_count(10)
    for digit, p in enumerate(answer["probabilities"]):  # unrounded
        expect(bars.nth(digit)).to_have_attribute("data-p", json.dumps(p))
        expect(bars.nth(digit)).to_have_attribute("data-digit", str(digit))
    assert painted(page, "#input", "black") > 20  # the 28x28 input shows the digit
    for k in range(16):
        assert painted(page, f"#maps [data-kernel='{k}'] canvas", "white") > 0
    expect(page.locator("#contributions tr")).to_have_count(1 + 16 + 1)  # digits, one row per kernel, the scores
    assert all(url.startswith(served.url) for url in visited), visited  # nothing from elsewhere
    page.locator("#clear").click()
    expect(page.locator("#prediction")).to_have_text("?")
    expect(page.locator("#probabilities [data-digit='0']")).to_have_attribute("data-p", "")


def test_clicking_a_kernel_shows_its_nine_weights(watched, served, small_run, expect):
    page, _ = watched
    page.goto(served.url)
    page.locator("#kernels [data-kernel='5']").click()
    cells = page.locator("#kernel-numbers td")
    expect(cells).to_have_count(9)
    weights = checkpoint.load(small_run).params["kernels"][:, 5]
    assert [float(cell.get_attribute("title")) for cell in cells.all()] == [float(w) for w in weights]
    assert cells.all_text_contents() == [f"{w:.3f}" for w in weights]


def test_the_colour_map_is_white_at_zero_blue_below_red_above(watched, served):
    page, _ = watched
    page.goto(served.url)
    colours = page.evaluate(
        "async () => { const { diverging } = await import('./panels.js');"
        " return [diverging(0, 2), diverging(-2, 2), diverging(2, 2), diverging(5, 2)]; }"
    )
    white, low, high, clipped = colours
    assert white == [255, 255, 255]
    assert low[2] > low[0] and high[0] > high[2] and clipped == high


def test_live_curves_grow_one_epoch_at_a_time(watched, mnist_dir, expect):
    page, _ = watched
    live = Served("train", "--epochs", "4", "--train-size", "256", "--test-size", "300", "--threads", "1",
                  "--live", "--port", "0", env={"PORTABLE_CNN_DATA_DIR": str(mnist_dir)})  # fmt: skip
    try:
        # Record every value #epoch and the curves' epoch count take, from before the page's script runs.
        page.add_init_script(
            """document.addEventListener("readystatechange", () => {
                if (document.readyState !== "interactive") return;
                window.seen = { epoch: [], curves: [] };
                new MutationObserver(() => window.seen.epoch.push(document.querySelector("#epoch").textContent))
                    .observe(document.querySelector("#epoch"), { childList: true });
                new MutationObserver(() => window.seen.curves.push(document.querySelector("#curves").dataset.epochs))
                    .observe(document.querySelector("#curves"), { attributes: true, attributeFilter: ["data-epochs"] });
            });"""
        )
        page.goto(live.url)
        expect(page.locator("#state")).to_have_text("not training")
        seen = page.evaluate("window.seen")
        assert seen["epoch"][-4:] == ["0", "1", "2", "3"]
        assert [int(count) for count in seen["curves"] if count != "0"] == [1, 2, 3, 4]
        expect(page.locator("#status")).to_contain_text("4 epochs trained")
    finally:
        status, _, stderr = live.interrupt()
    assert status == 0, stderr
