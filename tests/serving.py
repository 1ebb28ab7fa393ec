"""Helpers for the page's tests (and docs/make_screenshot.py): the command line serving in a subprocess (its URL
read from stderr, never waited for by a clock), HTTP requests with full control of the headers, a reader of
Server-Sent Events, and a stroke drawn with the mouse in a Playwright page."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse

URL = re.compile(r"http://\S+:\d+/")
NO_ANSWER = 60  # seconds a socket waits before the test fails instead of hanging (a guard, not a measurement)
SEVEN = [(0.3, 0.2), (0.75, 0.2), (0.55, 0.5), (0.4, 0.85)]  # a stroke that draws a 7: fractions of the pad's size


class Served:
    """``python -m portable_cnn ARGS`` that serves the page; ``url`` once its stderr has printed it."""

    def __init__(self, *args, env=None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "portable_cnn", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.stderr = self.read_stderr_until(URL)
        found = URL.search(self.stderr)
        assert found, f"no URL on stderr; it said: {self.stderr}{self.process.communicate()[1]}"
        self.url = found.group(0)

    def read_stderr_until(self, pattern: re.Pattern) -> str:
        """stderr's lines up to and including the first that matches (all of it if the process ends first)."""
        lines = []
        for line in self.process.stderr:
            lines.append(line)
            if pattern.search(line):
                break
        return "".join(lines)

    def interrupt(self) -> tuple[int, str, str]:
        """Ctrl-C; then its exit status, stdout and the rest of stderr."""
        self.process.send_signal(signal.SIGINT)
        stdout, stderr = self.process.communicate(timeout=NO_ANSWER)
        return self.process.returncode, stdout, self.stderr + stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


def connect(url: str) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=NO_ANSWER)


def request(url: str, method: str, path: str, body=None, headers=None) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request."""
    connection = connect(url)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def get_json(url: str, path: str):
    status, kind, body = request(url, "GET", path)
    assert status == 200 and kind == "application/json", (status, body)
    return json.loads(body)


def post_json(url: str, path: str, value) -> tuple[int, dict]:
    status, _, body = request(url, "POST", path, json.dumps(value).encode(), {"Content-Type": "application/json"})
    return status, json.loads(body)


def events(url: str, last_event_id: str | None = None):
    """The Server-Sent Events of /api/events as (event, id, data or comment) tuples, until the stream ends."""
    connection = connect(url)
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    connection.request("GET", "/api/events", headers=headers)
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    fields = {}
    try:
        for raw in response:
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith(":"):
                yield ("comment", None, line[1:].strip())
            elif line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                yield (fields.get("event", "message"), fields.get("id"), json.loads(fields["data"]))
                fields = {}
    finally:
        connection.close()


def stroke(page, points, release: bool = True) -> None:
    """Draw through ``points`` (fractions of #draw's width and height) with the mouse, button held down."""
    pad = page.locator("#draw").bounding_box()
    at = [(pad["x"] + fx * pad["width"], pad["y"] + fy * pad["height"]) for fx, fy in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for point in at[1:]:
        page.mouse.move(*point, steps=8)
    if release:
        page.mouse.up()
