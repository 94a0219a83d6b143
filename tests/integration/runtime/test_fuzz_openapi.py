"""Schemathesis against /openapi.json of a real runtime (uvicorn, fake:echo engine, SQLite in a tmp dir).

Every operation, with an admin's bearer token (admin routes too), in all four phases: the schema's examples,
its boundaries (coverage), random valid and invalid input (fuzzing), and stateful sequences that follow the
links schemathesis infers (Location headers, ids in bodies). The bar: no 5xx, and every answer's status,
Content-Type and body as the document says. Deterministic and bounded, so CI takes well under a minute.
Reproduce by hand: `schemathesis run http://HOST/openapi.json -H "Authorization: Bearer TOKEN"` plus the
options in `schemathesis_args`.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import RuntimeServer, start_runtime, stop_runtime

pytestmark = pytest.mark.integration

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
MAX_EXAMPLES = 30
ADMIN_EMAIL = "fuzz-admin@example.com"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    tmp = tmp_path_factory.mktemp("fuzz")
    # a tiny random image pipeline, so the image routes are fuzzed too (unconfigured they only answer 501)
    subprocess.run([sys.executable, "-m", "gpt_model.images_tiny", str(tmp / "tiny-sd")], check=True, timeout=300)
    runtime = start_runtime(
        tmp,
        GPT_MODEL_SOURCE="fake:echo?context=300",
        GPT_IMAGE_MODEL_SOURCE=str(tmp / "tiny-sd"),
        GPT_IMAGE_STEPS="1",
        GPT_IMAGE_MAX_SIDE="64",
        GPT_MODEL_THREADS="1",
        GPT_MAX_BODY_BYTES="65536",
        GPT_RATE_LIMIT_ANONYMOUS="0",  # 0 = unlimited: sign-up and login are fuzzed too
        GPT_RATE_LIMIT_FREE="0",
        GPT_QUOTA_FREE="0,0,0,0",
    )
    yield runtime
    stop_runtime(runtime)


def admin_token(server: RuntimeServer, database: Path) -> str:
    """Sign up, then make the account a verified admin in the store itself (no mail round trip needed)."""
    password = "correct horse battery"
    with server.client() as anon:
        assert anon.post("/auth/signup", json={"email": ADMIN_EMAIL, "password": password}).status_code == 201
        with sqlite3.connect(database) as db:
            db.execute("UPDATE users SET role = 'admin', email_verified = 1 WHERE email = ?", (ADMIN_EMAIL,))
        login = anon.post("/auth/login", json={"email": ADMIN_EMAIL, "password": password})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
    with server.client(token) as api:
        me = api.get("/auth/me").json()
        assert me["role"] == "admin", me
    return token


def schemathesis_args(base_url: str, token: str, report: Path) -> list[str]:
    return [
        f"{base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",  # the same cases every run, and no .hypothesis example database
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
        "--no-color",
    ]


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzz_server, tmp_path):
    token = admin_token(fuzz_server, fuzz_server.log_path.parent / "data" / "gpt.db")
    command = [sys.executable, "-m", "schemathesis.cli", "run"]
    command += schemathesis_args(fuzz_server.base_url, token, tmp_path / "junit.xml")
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    output = run.stdout + run.stderr
    print(output)  # the summary, with the case count, for the CI log (pytest -rP or on failure)
    summary = re.search(r"(\d+) generated", output)
    assert summary, output
    assert int(summary.group(1)) > 500, summary.group(0)
    assert run.returncode == 0, output[-20000:]
    selected, tested = re.search(r"Selected: (\d+)/(\d+)", output), re.search(r"Tested: (\d+)", output)
    assert selected and tested, output
    assert selected.group(1) == selected.group(2) == tested.group(1), "every operation is tested"
    assert "unhandled error" not in fuzz_server.logs()
