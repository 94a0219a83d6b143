"""The web page in a real Chromium (Debian's /usr/bin/chromium, driven by playwright-core from web/): sign up and
see a reply stream in, stop one, reload into the history, a second tab and a second device see a new conversation
(and a rename), upload a file and export a PDF, hit a rate limit, phone width in dark mode.

Two real runtimes on loopback: one on `fake:echo?delay_ms=80` with generous limits, one whose free tier allows
8 requests a minute (step 6). Screenshots of every step stay in `.artifacts/browser/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import RuntimeServer, start_runtime, stop_runtime

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SHOTS = ROOT / ".artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
STEPS = ("1-streaming", "1-chat", "2-stopped", "3-reloaded", "4-second-tab", "4-second-device", "4-search",
         "5-upload-export", "6-rate-limit", "7-phone-dark", "7-phone-menu", "8-voice", "9-logged-out")  # fmt: skip


@pytest.fixture(scope="module")
def built() -> Path:
    """The page built from web/ (hack/web.sh: quick when the build is current) and the test's node packages."""
    if shutil.which("npm") is None or not Path(CHROMIUM).exists():
        raise RuntimeError("the browser test needs npm and Debian's chromium (hack/test.sh installs both)")
    subprocess.run(["bash", "hack/web.sh"], cwd=ROOT, check=True, timeout=600)
    if not (ROOT / "web" / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT / "web", check=True, timeout=600)
    dist = ROOT / "runtime" / "gpt_runtime" / "webui" / "dist"
    assert (dist / "index.html").is_file()
    return dist


@pytest.fixture(scope="module")
def runtimes(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RuntimeServer, RuntimeServer]]:
    main = start_runtime(
        tmp_path_factory.mktemp("web-main"),
        GPT_MODEL_SOURCE="fake:echo?delay_ms=80",
        GPT_RATE_LIMIT_FREE="100000",
        GPT_RATE_LIMIT_ANONYMOUS="100000",
        GPT_QUOTA_FREE="1000,10000,10000000,100000000",
        GPT_WEB_DIST_DIR=str(built),
    )
    try:
        limited = start_runtime(
            tmp_path_factory.mktemp("web-limited"),
            GPT_MODEL_SOURCE="fake:echo?delay_ms=20",
            GPT_RATE_LIMIT_FREE="8",
            GPT_RATE_LIMIT_ANONYMOUS="100000",
            GPT_WEB_DIST_DIR=str(built),
        )
    except BaseException:
        stop_runtime(main)
        raise
    yield main, limited
    stop_runtime(limited)
    stop_runtime(main)


def offers_voice(server: RuntimeServer) -> bool:
    """Whether the runtime answers GET /voices (the page then shows its microphone and read-aloud buttons)."""
    with server.client(server.signup_and_login()) as client:
        status = client.get("/voices").status_code
    assert status in (200, 404, 501), status
    return status == 200


def run_browser_test(main: RuntimeServer, limited: RuntimeServer, shots: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "BASE_URL": main.base_url,
        "LIMITED_URL": limited.base_url,
        "CHROMIUM": CHROMIUM,
        "SCREENSHOT_DIR": str(shots),
        "EXPECT_VOICE": "1" if offers_voice(main) else "0",
    }
    return subprocess.run(
        ["node", "web/tests/browser.mjs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def test_the_web_page_in_a_real_browser(runtimes: tuple[RuntimeServer, RuntimeServer]) -> None:
    main, limited = runtimes
    shutil.rmtree(SHOTS, ignore_errors=True)
    result = run_browser_test(main, limited, SHOTS)
    print(result.stdout)
    assert result.returncode == 0, (
        f"browser test failed (screenshots in {SHOTS}):\n{result.stdout}\n{result.stderr}\n"
        f"runtime log tail:\n{main.logs()[-3000:]}"
    )
    assert "browser test passed" in result.stdout
    for name in STEPS:
        path = SHOTS / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 5000, f"no screenshot {path}"
        print(f"screenshot: {path}")
    assert (SHOTS / "export.pdf").read_bytes().startswith(b"%PDF-")
