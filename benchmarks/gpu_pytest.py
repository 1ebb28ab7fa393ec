"""The GPU check's pytest plugin (``-p benchmarks.gpu_pytest [--outcomes-json PATH]``): a skipped test fails the
session (on the GPU machine a skip means a GPU path did not run), and the session's outcomes are written as JSON:
counts, every test's outcome (with the reason where it did not pass), and the properties tests recorded."""

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
    def pytest_sessionfinish(self, session):
        counts = {}
        for test in self.tests.values():
            counts[test["outcome"]] = counts.get(test["outcome"], 0) + 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"counts": counts, "tests": self.tests, "properties": self.properties}
        self.path.write_text(json.dumps(document, indent=1) + "\n")


def pytest_configure(config):
    if config.getoption("outcomes_json") is not None:
        config.pluginmanager.register(Outcomes(config.getoption("outcomes_json")), "outcomes-json")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """A successful session with skipped tests becomes a failed one."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter.write_line(f"no skips: {skipped} skipped test(s) count as failures on the GPU machine", red=True)
