"""pytest plugin: a test may skip (or xfail) only for absent optional hardware or packages.

Every skipped or xfailed test's reason is recorded. At the end of the session,
any reason that does not start with one of :data:`ALLOWED_SKIP_REASONS` (skips)
or :data:`ALLOWED_XFAIL_REASONS` (xfails and xpasses) is listed and the session
fails, so a test that silently stops running (missing data file, forgotten
``pytest.skip``) breaks CI instead of shrinking the suite.

Loaded by ``tests/conftest.py``; ``-p no:skip_policy`` turns it off for one run.
"""

from __future__ import annotations

import sys

import pytest

#: the only acceptable reasons to skip: the test needs something optional that is absent
ALLOWED_SKIP_REASONS: tuple[str, ...] = (
    "needs a CUDA device",
    "needs the optional package ",  # e.g. pytest.importorskip("pyscf", reason=...)
)
#: the only acceptable reasons for xfail (none so far)
ALLOWED_XFAIL_REASONS: tuple[str, ...] = ()



def _reason(report) -> str:
    """The human reason of a skipped report, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        message = str(longrepr[2])
    else:
        message = str(longrepr)
    return message.removeprefix("Skipped: ").strip()


def offence(report) -> str | None:
    """``"kind: nodeid: reason"`` if ``report`` is a skip/xfail/xpass not allowed, else None."""
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None and (report.skipped or report.passed):
        kind = "xfail" if report.skipped else "xpass"
        reason, allowed = str(wasxfail), ALLOWED_XFAIL_REASONS
    elif report.skipped:
        kind, reason, allowed = "skip", _reason(report), ALLOWED_SKIP_REASONS
    else:
        return None
    if reason.startswith(allowed):
        return None
    return f"{kind}: {report.nodeid}: {reason or '(no reason given)'}"


class SkipPolicy:
    """Collects offending reports of one session and fails the session if there are any."""

    def __init__(self) -> None:
        self.offenders: list[str] = []

    def _record(self, report) -> None:
        line = offence(report)
        if line is not None:
            self.offenders.append(line)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.offenders:
            return
        lines = [
            f"{len(self.offenders)} test(s) skipped or xfailed for a reason that is not "
            f"allowed (skip reasons must start with one of {ALLOWED_SKIP_REASONS!r}, "
            f"xfail reasons with one of {ALLOWED_XFAIL_REASONS!r}; see tests/skip_policy.py):",
            *(f"  {line}" for line in self.offenders),
        ]
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")  # after the progress line
            reporter.write_sep("=", "disallowed skips", red=True, bold=True)
            for line in lines:
                reporter.write_line(line, red=True)
        else:
            print("\n".join(lines), file=sys.stderr)
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(SkipPolicy(), "skip_policy_session")
