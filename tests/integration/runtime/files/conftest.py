"""A real runtime (uvicorn in a subprocess) with local files or S3 files on moto's server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from ..aws_emulator import moto_endpoint
from ..conftest import RuntimeServer, start_runtime, stop_runtime

MAX_UPLOAD = 10 * 1024 * 1024


def start_files_runtime(tmp: Path, **env: str) -> RuntimeServer:
    """The suite's runtime with no per-IP limit (many signups) and the files backend from `env`."""
    return start_runtime(tmp, GPT_RATE_LIMIT_ANONYMOUS="0", **env)


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
