"""The API's contract on a real uvicorn: every error in the JSON error shape (uvicorn's own 400s too), an
OpenAPI document that names every error answer and the constraints the server enforces, and /docs offline."""

from __future__ import annotations

import json
import socket
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from .conftest import RuntimeServer
from .wsclient import ws_connect

pytestmark = pytest.mark.integration

ERROR_REF = "#/components/schemas/ErrorOut"
BODY_LIMIT = 65536  # GPT_MAX_BODY_BYTES of the conftest server


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    return error


def raw_http(server: RuntimeServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a fresh socket; the status, headers and body of the answer (read until close)."""
    host, port = urlsplit(server.base_url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    return int(status_line.split()[1]), headers, body


# request bodies


def test_oversized_chunked_body_is_413_payload_too_large(server):
    """No Content-Length, so only the streamed count can stop it: the answer still names the code."""

    def chunks():
        for _ in range(BODY_LIMIT // 1024 + 8):
            yield b" " * 1024

    with server.client() as anon:
        response = anon.post("/auth/signup", content=chunks(), headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    error = assert_error(response, 413, "payload_too_large")
    assert str(BODY_LIMIT) in error["message"]


def test_oversized_chunked_upload_is_413_payload_too_large(server, token):
    """The multipart parser meets the limit too (its own limit: the file limit plus framing)."""
    boundary = "x" * 16
    limit = 10 * 1024 * 1024 + 64 * 1024

    def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n'.encode()
        for _ in range(limit // 65536 + 2):
            yield b"a" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    with server.client(token) as api:
        response = api.post(
            "/upload", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
        )
    assert_error(response, 413, "payload_too_large")


def test_malformed_http_gets_the_json_error_body(server):
    """uvicorn answers what it cannot parse itself; its 400 carries the same JSON shape."""
    for request in (
        b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nnot-hex\r\n",
        b"GET /health HTTP/9.9 extra\r\n\r\n",
    ):
        status, headers, body = raw_http(server, request)
        assert status == 400, body
        assert headers["content-type"] == "application/json"
        error = json.loads(body)["error"]
        assert error["code"] == "invalid_http" and error["type"] == "invalid_request_error"
        assert int(headers["content-length"]) == len(body)


# OpenAPI


@pytest.fixture(scope="module")
def openapi(server) -> dict:
    with server.client() as anon:
        response = anon.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_openapi_has_no_fastapi_default_validation_error(openapi):
    text = json.dumps(openapi)
    assert "HTTPValidationError" not in text
    assert "ValidationError" not in openapi["components"]["schemas"]
    error = openapi["components"]["schemas"]["ErrorOut"]
    assert error["required"] == ["error"]
    detail = openapi["components"]["schemas"]["ErrorDetail"]
    assert set(detail["properties"]) == {"message", "type", "param", "code"}


def test_openapi_documents_every_error_status_with_the_error_body(openapi):
    seen: set[int] = set()
    for name, operation in operations(openapi):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                seen.add(int(status))
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": ERROR_REF}, (name, status)
        if operation.get("security"):
            assert {"401", "429"} <= set(operation["responses"]), name
        if "requestBody" in operation:
            assert {"400", "413", "422"} <= set(operation["responses"]), name
    assert {400, 401, 403, 404, 409, 413, 415, 422, 429, 503} <= seen


@pytest.mark.parametrize(
    ("operation", "statuses"),
    [
        ("POST /generate", {"400", "401", "404", "413", "422", "429", "503"}),
        ("POST /v1/chat/completions", {"400", "401", "404", "413", "422", "429", "503"}),
        ("POST /auth/signup", {"400", "409", "413", "422", "429"}),
        ("POST /auth/login", {"401", "403", "422", "429"}),
        ("POST /upload", {"401", "404", "413", "415", "422", "429"}),
        ("GET /conversations/{conversation_id}", {"401", "404", "429"}),
        ("GET /conversations", {"400", "401", "422", "429"}),
        ("DELETE /cache", {"401", "403", "422", "429"}),
        ("PUT /admin/users/{user_id}/role", {"401", "403", "404", "422", "429"}),
        ("GET /ready", {"503"}),
    ],
)
def test_openapi_names_each_routes_own_errors(openapi, operation, statuses):
    documented = dict(operations(openapi))[operation]["responses"]
    assert statuses <= set(documented), sorted(documented)


def test_openapi_names_retry_after_on_429_and_503(openapi):
    responses = dict(operations(openapi))["POST /generate"]["responses"]
    for status in ("429", "503"):
        assert "Retry-After" in responses[status]["headers"]


def test_openapi_has_the_constraints_the_server_enforces(openapi):
    schemas = openapi["components"]["schemas"]
    for name in ("SignupIn", "LoginIn", "EmailIn"):
        assert schemas[name]["properties"]["email"]["format"] == "email", name
    generate = schemas["GenerateIn"]
    assert generate["not"] == {
        "required": ["async", "stream"],
        "properties": {"async": {"const": True}, "stream": {"const": True}},
    }
    upload = dict(operations(openapi))["POST /upload"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    body = schemas[upload["$ref"].rsplit("/", 1)[-1]]
    assert body["properties"]["file"]["minLength"] == 1
    chat = dict(operations(openapi))["POST /v1/chat/completions"]["requestBody"]["content"]["application/json"]
    assert schemas[chat["schema"]["$ref"].rsplit("/", 1)[-1]]["properties"]["model"]["enum"] == ["fake-echo"]


def test_documented_constraints_are_what_the_server_answers(api):
    assert_error(api.post("/generate", json={"prompt": "hi", "async": True, "stream": True}), 400, "async_stream")
    assert_error(api.post("/upload", files={"file": ("empty.txt", b"")}), 422, "empty_file")
    with httpx.Client(base_url=str(api.base_url)) as anon:
        signup = anon.post("/auth/signup", json={"email": "not-an-email", "password": "correct horse battery"})
    assert_error(signup, 400, "invalid_email")


# WebSocket


def test_websocket_validation_error_carries_the_frames_request_id(server, token):
    with ws_connect(server.ws_url, token) as ws:
        ws.send(json.dumps({"type": "generate", "request_id": "r-17", "content": "", "params": {"top_p": 5}}))
        frame = json.loads(ws.recv(timeout=10))
        assert frame["type"] == "error" and frame["request_id"] == "r-17", frame
        assert set(frame["error"]) == {"message", "type", "param", "code"}
        # a frame without a usable id (not JSON, a number, deeply nested) still gets an error frame, with null
        for raw in ("not json", json.dumps({"type": "generate", "request_id": 7}), "[" * 60_000):
            ws.send(raw)
            frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] == "error" and frame["request_id"] is None, frame
        # and the socket still works
        ws.send(json.dumps({"type": "generate", "request_id": "ok", "content": "hello"}))
        while (frame := json.loads(ws.recv(timeout=10)))["type"] != "done":
            assert frame["type"] == "delta", frame


def test_websocket_to_no_route_is_refused_with_a_json_404(server):
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{server.ws_url}/ws/no-such-route", open_timeout=10)
    response = refused.value.response
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body)["error"]["code"] == "route_not_found"


# /docs offline


class _AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


@pytest.mark.parametrize(("page", "assets"), [("/docs", 3), ("/redoc", 2)])
def test_docs_load_only_same_origin_assets(server, page, assets):
    with server.client() as anon:
        html = anon.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "//" not in html.text  # no absolute or protocol-relative URL anywhere on the page
        parser = _AssetLinks()
        parser.feed(html.text)
        assert len(parser.urls) == assets, parser.urls
        origin = urlsplit(server.base_url).netloc
        for url in parser.urls:
            absolute = urljoin(f"{server.base_url}{page}", url)
            assert urlsplit(absolute).netloc == origin, url
            asset = anon.get(absolute)
            assert asset.status_code == 200, url
            assert len(asset.content) > 1000, url
            if url.endswith(".js"):
                assert "javascript" in asset.headers["content-type"]
            elif url.endswith(".css"):
                assert asset.headers["content-type"].startswith("text/css")
        # the page loads the spec from this server too
        assert "url: '/openapi.json'" in html.text or 'spec-url="/openapi.json"' in html.text
