"""Suite-wide rules.

`GPT_FAIL_ON_SKIP=1` (hack/test.sh sets it for CI) turns any skipped test into a failed run: a test that did
not run proved nothing, so CI must not count it as a pass. Deselected tests (`-m "not e2e"`) are not skips.
"""

from __future__ import annotations

import os

import pytest


def skipped_reports(session: pytest.Session) -> list[pytest.TestReport]:
    """The skip reports the terminal reporter collected in this session."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    return list(reporter.stats.get("skipped", [])) if reporter is not None else []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("GPT_FAIL_ON_SKIP") != "1":
        return
    skipped = skipped_reports(session)
    if skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("GPT_FAIL_ON_SKIP") != "1":
        return
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        terminalreporter.write_line(
            f"GPT_FAIL_ON_SKIP=1: {len(skipped)} skipped test(s) fail this run (a skipped test proves nothing)",
            red=True,
        )
