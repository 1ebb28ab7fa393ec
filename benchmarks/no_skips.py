"""A pytest plugin for the GPU check (``-p benchmarks.no_skips``): a skipped test fails the session.

On the lent GPU machine a skip means a GPU path did not run (a library or a device missing), which
the check must report as a failure, not pass over. With ``-rs`` pytest prints each skip's reason.
"""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """Turn a successful session with skipped tests into a failed one."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter is not None:
            reporter.write_line(f"no_skips: {skipped} skipped test(s) count as failures on the GPU machine", red=True)
