"""Which revision and track a pod serves: settings from the downward API, the X-GPT-Revision header."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from gpt_runtime.metrics import Metrics
from gpt_runtime.middleware import RequestContextMiddleware
from gpt_runtime.settings import RuntimeSettings
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

pytestmark = pytest.mark.unit


def test_revision_and_track_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (RuntimeSettings().revision, RuntimeSettings().track) == (None, None)
    monkeypatch.setenv("GPT_REVISION", "5d8c7f9b")
    monkeypatch.setenv("GPT_TRACK", "canary")
    settings = RuntimeSettings()
    assert (settings.revision, settings.track) == ("5d8c7f9b", "canary")


def test_a_missing_label_reads_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPT_REVISION", "")  # what the downward API gives for a label the pod lacks
    monkeypatch.setenv("GPT_TRACK", "")
    settings = RuntimeSettings()
    assert (settings.revision, settings.track) == (None, None)


def _get(revision: str | None, path: str, **kwargs: object) -> httpx.Response:
    async def hello(_request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = RequestContextMiddleware(
        Starlette(routes=[Route("/hello", hello, methods=["GET", "POST"])]),
        metrics=Metrics(),
        max_body_bytes=10,
        revision=revision,
    )

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pod") as client:
            return await client.request("POST" if "content" in kwargs else "GET", path, **kwargs)

    return asyncio.run(call())


@pytest.mark.parametrize(
    ("path", "kwargs", "status"),
    [("/hello", {}, 200), ("/missing", {}, 404), ("/hello", {"content": b"x" * 99}, 413)],
)
def test_every_response_names_the_revision_when_there_is_one(path: str, kwargs: dict, status: int) -> None:
    response = _get("abc123", path, **kwargs)
    assert response.status_code == status
    assert response.headers["x-gpt-revision"] == "abc123"
    assert response.headers["x-request-id"]


def test_no_revision_no_header() -> None:
    response = _get(None, "/hello")
    assert response.status_code == 200
    assert "x-gpt-revision" not in response.headers
