"""tests/skip_policy.py: a skip or xfail fails the session unless its reason is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

POLICY = Path(__file__).with_name("skip_policy.py")


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch):
    """Run pytest on one test file in a scratch folder with only the skip policy loaded."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(skip_policy=POLICY.read_text())
    pytester.syspathinsert()

    def _run(source: str) -> pytest.RunResult:
        pytester.makepyfile(test_sample=source)
        return pytester.runpytest_inprocess("-p", "skip_policy", "-q", "-rs")

    return _run


def test_unjustified_skip_fails_the_session(run):
    result = run(
        """
        import pytest

        def test_passes():
            pass

        def test_needs_data():
            pytest.skip("data missing")
        """
    )
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*disallowed skips*", "*skip: test_sample.py::test_needs_data: data missing*"]
    )


def test_cuda_skip_is_allowed(run):
    result = run(
        """
        import pytest

        def test_passes():
            pass

        @pytest.mark.skipif(True, reason="needs a CUDA device")
        def test_on_gpu():
            pass
        """
    )
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK
    assert "disallowed" not in result.stdout.str()


@pytest.mark.parametrize(
    "body",
    [
        "@pytest.mark.xfail(reason='known bug')\ndef test_x():\n    assert False",
        "def test_x():\n    pytest.xfail('flaky')",
        "@pytest.mark.xfail(reason='known bug')\ndef test_x():\n    pass",  # xpass
        "pytest.skip('no data', allow_module_level=True)\ndef test_x():\n    pass",
        "@pytest.mark.skip\ndef test_x():\n    pass",
    ],
    ids=["xfail-mark", "xfail-call", "xpass", "module-skip", "skip-no-reason"],
)
def test_xfail_and_other_skips_fail_the_session(run, body):
    result = run("import pytest\n\ndef test_passes():\n    pass\n\n" + body + "\n")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*disallowed skips*"])
