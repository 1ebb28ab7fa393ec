"""A pytest plugin for the GPU check (``-p benchmarks.pytest_outcomes --outcomes-json PATH``): the session's
outcomes as JSON, written when it ends: counts, the failed and skipped tests with their reasons, and the
properties tests recorded (``record_property``, e.g. how many of --book's 300 lines differ on a GPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--outcomes-json", type=Path, help="write the session's outcomes to this JSON file")


class Outcomes:
    def __init__(self, path: Path):
        self.path, self.tests, self.properties = path, {}, {}

    def pytest_runtest_logreport(self, report):
        if report.failed or report.skipped or report.when == "call":
            reason = report.longrepr[2] if report.skipped and isinstance(report.longrepr, tuple) else None
            if report.failed:
                reason = str(report.longrepr).strip().splitlines()[-1] if report.longrepr else "failed"
            outcome = "error" if report.failed and report.when != "call" else report.outcome
            self.tests[report.nodeid] = {"outcome": outcome, **({"reason": reason} if reason else {})}
        if report.user_properties:
            self.properties[report.nodeid] = dict(report.user_properties)

    def pytest_collectreport(self, report):
        if report.failed:
            self.tests[report.nodeid or "collection"] = {"outcome": "error", "reason": str(report.longrepr)[-500:]}

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):  # the exit status is the stage's, in summary.json
        counts = {}
        for test in self.tests.values():
            counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
        document = {
            "counts": counts,
            "not_passed": {node: test for node, test in self.tests.items() if test["outcome"] != "passed"},
            "properties": self.properties,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(document, indent=1) + "\n")


def pytest_configure(config):
    path = config.getoption("outcomes_json")
    if path is not None:
        config.pluginmanager.register(Outcomes(path), "outcomes-json")
