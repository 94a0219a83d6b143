"""A real runtime (uvicorn in a subprocess) with local files or S3 files on moto's server."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from ..aws_emulator import moto_endpoint
from ..conftest import RuntimeServer, free_port, stop_runtime

MAX_UPLOAD = 10 * 1024 * 1024


def start_files_runtime(tmp: Path, **env: str) -> RuntimeServer:
    """Like the suite's start_runtime, but through serve.py so /upload exists even before app.py wires it."""
    port = free_port()
    secret = secrets.token_urlsafe(48)
    log_path = tmp / "runtime.log"
    full_env = {
        **os.environ,
        "GPT_PORT": str(port),
        "GPT_DATA_DIR": str(tmp / "data"),
        "GPT_JWT_SECRET": secret,
        "GPT_MODEL_SOURCE": "fake:echo",
        "GPT_RATE_LIMIT_ANONYMOUS": "0",
        "GPT_MAX_BODY_BYTES": str(MAX_UPLOAD + 1024 * 1024),  # room for the route's own 10 MB check
        **env,
    }
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("serve.py"))],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runtime exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=2).status_code == 200:
                return RuntimeServer(base_url, f"ws://127.0.0.1:{port}", secret, log_path, process)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"runtime did not become ready:\n{log_path.read_text()}")


class FilesBackend:
    """Where the server under test keeps files, and a way to list what it wrote there."""

    def __init__(self, kind: str, server: RuntimeServer, stored_keys):
        self.kind = kind
        self.server = server
        self.stored_keys = stored_keys


@pytest.fixture(scope="module", params=["local", "s3"])
def files_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilesBackend]:
    tmp = tmp_path_factory.mktemp(f"files-{request.param}")
    if request.param == "local":
        root = tmp / "uploads"
        server = start_files_runtime(tmp, GPT_FILES_URL=f"file://{root}")

        def stored_keys() -> list[str]:
            return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    else:
        endpoint = moto_endpoint()
        bucket = f"files-{uuid.uuid4().hex[:10]}"
        s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)
        s3.create_bucket(Bucket=bucket)
        server = start_files_runtime(
            tmp, GPT_FILES_URL=f"s3://{bucket}/uploads?region=us-east-1&endpoint_url={endpoint}"
        )

        def stored_keys() -> list[str]:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    yield FilesBackend(request.param, server, stored_keys)
    stop_runtime(server)
