"""CI counts a skipped test as a failure (tests/conftest.py, GPT_FAIL_ON_SKIP=1 from hack/test.sh)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def _run(tmp_path: Path, *args: str, fail_on_skip: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n\ndef test_skipped():\n    pytest.skip('no server')\n\ndef test_ran():\n    pass\n"
    )
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "GPT_FAIL_ON_SKIP": "1" if fail_on_skip else "0"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-c",
            os.devnull,
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=tmp_path,
    )


def test_a_skipped_test_fails_the_run_in_ci(tmp_path: Path) -> None:
    result = _run(tmp_path, fail_on_skip=True)
    assert result.returncode == 1, result.stdout
    assert "1 skipped test(s) fail this run" in result.stdout


def test_without_the_switch_a_skip_is_only_reported(tmp_path: Path) -> None:
    result = _run(tmp_path, fail_on_skip=False)
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout


def test_deselected_tests_are_not_skips(tmp_path: Path) -> None:
    result = _run(tmp_path, "-k", "ran", fail_on_skip=True)
    assert result.returncode == 0, result.stdout
    assert "1 deselected" in result.stdout
