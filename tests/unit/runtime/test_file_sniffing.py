"""Content sniffing and file-store URLs: the type comes from the bytes, never from a client's header."""

from __future__ import annotations

import pytest
from gpt_runtime.backends.factory import open_file_store
from gpt_runtime.backends.files import LocalFileStore
from gpt_runtime.backends.s3 import S3FileStore
from gpt_runtime.services.filetypes import sniff_content_type
from gpt_runtime.storage.dynamodb import parse_url

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xdb" + b"\x00" * 8, "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8L", "image/webp"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),  # RIFF, but a video
        (b"\xff\xf3\x84\x00" + b"\x00" * 8, "audio/mpeg"),  # MPEG-2 layer III frame
        (b"\xff\xfd\x90\x00" + b"\x00" * 8, None),  # layer II: not MP3
        (b"\xef\xbb\xbf[1, 2, 3]", "application/json"),  # BOM before JSON
        (b'"just a string"', "text/plain"),  # valid JSON, but not an object or array
        (b"page one\x0cpage two\n", "text/plain"),
        (b"text with a \x00 NUL", None),
        (b"\x1b[31mred\x1b[0m", None),  # escape sequences are not plain text
        (b"%PDX-1.4", "text/plain"),  # near miss of a PDF
        (b"GIF88a", "text/plain"),
    ],
)
def test_sniffing(data: bytes, expected: str | None):
    assert sniff_content_type(data) == expected


def test_file_store_urls():
    local = open_file_store("file:///var/lib/gpt/files")
    assert isinstance(local, LocalFileStore) and str(local.root) == "/var/lib/gpt/files"
    s3 = open_file_store("s3://bucket/some/prefix/?region=eu-west-1&endpoint_url=http://127.0.0.1:9000")
    assert isinstance(s3, S3FileStore)
    assert (s3.bucket, s3.prefix, s3.region, s3.endpoint_url) == (
        "bucket",
        "some/prefix",
        "eu-west-1",
        "http://127.0.0.1:9000",
    )
    assert s3._key("u1", "f" * 32) == f"some/prefix/u1/{'f' * 32}"
    assert open_file_store("s3://bucket")._key("u1", "a" * 32) == f"u1/{'a' * 32}"
    for bad in ("file://relative/path", "ftp://x/y", "s3:///no-bucket", "s3://b/p?regoin=x"):
        with pytest.raises(ValueError):
            open_file_store(bad)


def test_dynamodb_urls():
    assert parse_url("dynamodb://") == {"table": "gpt", "region": None, "endpoint_url": None}
    assert parse_url("dynamodb://gpt-prod?region=eu-west-1") == {
        "table": "gpt-prod",
        "region": "eu-west-1",
        "endpoint_url": None,
    }
    assert parse_url("dynamodb://t?endpoint_url=http://127.0.0.1:8000")["endpoint_url"] == "http://127.0.0.1:8000"
