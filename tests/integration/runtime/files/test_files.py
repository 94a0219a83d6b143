"""POST /upload and GET/DELETE /files/{id} over real HTTP, on local files and on S3 (moto's server)."""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from .conftest import MAX_UPLOAD, FilesBackend

pytestmark = pytest.mark.integration

_NOISE = bytes(range(256)) + os.urandom(256)  # binary filler: keeps binary samples from passing as text

SAMPLES = {
    "image/jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + _NOISE,
    "image/png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + _NOISE,
    "image/gif": b"GIF89a\x01\x00\x01\x00" + _NOISE,
    "image/webp": b"RIFF\x24\x02\x00\x00WEBPVP8 " + _NOISE,
    "application/pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + _NOISE,
    "audio/mpeg": b"ID3\x04\x00\x00\x00\x00\x00\x00" + _NOISE,
    "audio/wav": b"RIFF\x24\x08\x00\x00WAVEfmt " + _NOISE,
    "audio/ogg": b"OggS\x00\x02\x00\x00" + _NOISE,
    "application/json": b'{"messages": [{"role": "user", "content": "hi"}], "n": 1}',
    "text/plain": "Grüße, world\n\tsecond line\r\n".encode(),
}


def _upload(client, data: bytes, *, declared: str = "application/octet-stream", name: str = "f.bin", **form):
    return client.post("/upload", files={"file": (name, data, declared)}, data=form)


def _assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_every_supported_type_round_trips_with_its_sniffed_type(files_backend: FilesBackend, kind: str):
    server = files_backend.server
    data = SAMPLES[kind]
    with server.client(server.signup_and_login()) as client:
        response = _upload(client, data, declared="application/x-lies", name="sample")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["content_type"] == kind
        assert (body["bytes"], body["sha256"], body["filename"]) == (
            len(data),
            hashlib.sha256(data).hexdigest(),
            "sample",
        )
        fetched = client.get(f"/files/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"].split(";")[0] == kind
    assert fetched.headers["x-content-type-options"] == "nosniff"


def test_an_mpeg_frame_without_id3_is_mp3(files_backend: FilesBackend):
    server = files_backend.server
    with server.client(server.signup_and_login()) as client:
        response = _upload(client, b"\xff\xfb\x90\x64" + _NOISE, declared="text/plain")
    assert response.status_code == 201 and response.json()["content_type"] == "audio/mpeg"


def test_the_declared_content_type_is_never_trusted(files_backend: FilesBackend):
    server = files_backend.server
    with server.client(server.signup_and_login()) as client:
        as_png = _upload(client, b"<script>alert(1)</script>", declared="image/png", name="x.png")
        assert as_png.status_code == 201 and as_png.json()["content_type"] == "text/plain"
        served = client.get(f"/files/{as_png.json()['id']}")
        assert served.headers["content-type"].startswith("text/plain")
        assert served.headers["content-disposition"].startswith("attachment")
        png_as_text = _upload(client, SAMPLES["image/png"], declared="text/plain", name="notes.txt")
        assert png_as_text.json()["content_type"] == "image/png"
        broken_json = _upload(client, b'{"unterminated": ', declared="application/json")
        assert broken_json.json()["content_type"] == "text/plain"


@pytest.mark.parametrize(
    "data",
    [b"\x7fELF\x02\x01\x01\x00" + _NOISE, b"PK\x03\x04\x14\x00" + _NOISE, b"plain \xc3\x28 not utf-8", b"MZ\x90\x00"],
    ids=["elf", "zip", "bad-utf8", "exe"],
)
def test_other_types_are_415(files_backend: FilesBackend, data: bytes):
    server = files_backend.server
    before = files_backend.stored_keys()
    with server.client(server.signup_and_login()) as client:
        error = _assert_error(_upload(client, data, declared="image/jpeg"), 415, "unsupported_media_type")
    assert error["param"] == "file"
    assert files_backend.stored_keys() == before


def test_size_limit_is_10_mb(files_backend: FilesBackend):
    server = files_backend.server
    at_limit = SAMPLES["image/png"] + b"\x00" * (MAX_UPLOAD - len(SAMPLES["image/png"]))
    with server.client(server.signup_and_login()) as client:
        too_big = _upload(client, at_limit + b"\x00")
        _assert_error(too_big, 413, "file_too_large")
        ok = _upload(client, at_limit)
        assert ok.status_code == 201, ok.text
        assert ok.json()["bytes"] == MAX_UPLOAD
        fetched = client.get(f"/files/{ok.json()['id']}")
    assert hashlib.sha256(fetched.content).hexdigest() == hashlib.sha256(at_limit).hexdigest()


def test_missing_or_empty_file_is_422(files_backend: FilesBackend):
    server = files_backend.server
    with server.client(server.signup_and_login()) as client:
        assert _assert_error(_upload(client, b""), 422, "empty_file")["param"] == "file"
        missing = client.post("/upload", data={"conversation_id": "x"}, files={"other": ("a.txt", b"hi", "text/plain")})
        assert _assert_error(missing, 422)["param"] == "file"
        as_json = client.post("/upload", json={"file": "aGk="})
        assert _assert_error(as_json, 422)["param"] == "file"


def test_files_are_private_to_their_owner(files_backend: FilesBackend):
    server = files_backend.server
    with server.client(server.signup_and_login()) as ann, server.client(server.signup_and_login()) as bob:
        file_id = _upload(ann, SAMPLES["application/pdf"], name="contract.pdf").json()["id"]
        _assert_error(bob.get(f"/files/{file_id}"), 404, "file_not_found")
        _assert_error(bob.delete(f"/files/{file_id}"), 404, "file_not_found")
        _assert_error(server.client().get(f"/files/{file_id}"), 401)
        _assert_error(server.client().post("/upload", files={"file": ("a", b"hi", "text/plain")}), 401)
        for bad in (uuid.uuid4().hex, "..%2F..%2Fetc%2Fpasswd", "not-an-id"):
            _assert_error(ann.get(f"/files/{bad}"), 404)
        assert ann.get(f"/files/{file_id}").content == SAMPLES["application/pdf"]

        assert ann.delete(f"/files/{file_id}").status_code == 204
        _assert_error(ann.get(f"/files/{file_id}"), 404, "file_not_found")
        _assert_error(ann.delete(f"/files/{file_id}"), 404)


def test_upload_into_a_conversation_checks_its_owner(files_backend: FilesBackend):
    server = files_backend.server
    with server.client(server.signup_and_login()) as ann, server.client(server.signup_and_login()) as bob:
        conversation = ann.post("/conversations", json={"title": "with files"}).json()["id"]
        attached = _upload(ann, SAMPLES["text/plain"], conversation_id=conversation)
        assert attached.status_code == 201 and attached.json()["conversation_id"] == conversation
        _assert_error(_upload(bob, SAMPLES["text/plain"], conversation_id=conversation), 404, "conversation_not_found")


def test_files_land_in_the_configured_backend(files_backend: FilesBackend):
    server = files_backend.server
    with server.client(server.signup_and_login()) as client:
        me = client.get("/auth/me").json()["id"]
        file_id = _upload(client, SAMPLES["image/gif"], name="ünï cödé.gif").json()["id"]
        fetched = client.get(f"/files/{file_id}")
    assert "filename*=UTF-8''%C3%BCn%C3%AF%20c%C3%B6d%C3%A9.gif" in fetched.headers["content-disposition"]
    keys = files_backend.stored_keys()
    if files_backend.kind == "s3":
        assert f"uploads/{me}/{file_id}" in keys
    else:
        assert f"{me}/{file_id}" in keys and f"{me}/{file_id}.json" in keys
