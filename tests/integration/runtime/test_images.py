"""Image generation over real HTTP: a runtime (uvicorn in a subprocess) loading a tiny random diffusers pipeline
built here, from a directory and from s3:// on moto's server; the images fetched back by their URLs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import openai
import pytest
from gpt_model.images_tiny import build_tiny_pipeline
from PIL import Image

from .aws_emulator import moto_endpoint
from .conftest import RuntimeServer, start_runtime, stop_runtime

pytestmark = pytest.mark.integration

MAX_SIDE = 256
IMAGE_ENV = {
    "GPT_IMAGE_STEPS": "2",
    "GPT_IMAGE_MAX_SIDE": str(MAX_SIDE),
    "GPT_RATE_LIMIT_ANONYMOUS": "0",
    "GPT_RATE_LIMIT_FREE": "0",
    "GPT_QUOTA_FREE": "0,0,0,0",
    "GPT_MAX_PROMPT_CHARS": "20000",
    "GPT_MODEL_THREADS": "1",  # CI's few shared cores: one torch thread is faster than two spinning
}


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("pipeline") / "tiny-sd")


@pytest.fixture(scope="module")
def images_server(tmp_path_factory: pytest.TempPathFactory, pipeline_dir: Path) -> Iterator[RuntimeServer]:
    server = start_runtime(tmp_path_factory.mktemp("images"), GPT_IMAGE_MODEL_SOURCE=str(pipeline_dir), **IMAGE_ENV)
    yield server
    stop_runtime(server)


@pytest.fixture
def api(images_server: RuntimeServer) -> Iterator[httpx.Client]:
    with images_server.client(images_server.signup_and_login()) as client:
        yield client


def stored_files(server: RuntimeServer) -> list[Path]:
    """Every file the server's file store holds (the embedded default: data/files/<owner>/<id> + <id>.json)."""
    root = server.log_path.parent / "data" / "files"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def assert_error(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


def fetch_png(client: httpx.Client, url: str) -> tuple[bytes, Image.Image]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    assert image.format == "PNG"
    return response.content, image


def generate(client: httpx.Client, **body) -> dict:
    response = client.post("/generate-image", json={"prompt": "a lighthouse at dusk"} | body)
    assert response.status_code == 200, response.text
    return response.json()


def test_images_are_stored_in_a_new_conversation_and_fetched_by_their_url(images_server, api):
    body = generate(api, size="128x64", n=2, seed=5)
    assert [(i["width"], i["height"], i["seed"]) for i in body["images"]] == [(128, 64, 5), (128, 64, 6)]
    conversation = api.get(f"/conversations/{body['conversation_id']}")
    assert conversation.status_code == 200 and conversation.json()["title"] == "a lighthouse at dusk"
    pictures = []
    for item in body["images"]:
        assert item["url"] == f"{images_server.base_url}/files/{item['file_id']}"
        data, image = fetch_png(api, item["url"])
        assert image.size == (128, 64)
        pictures.append(data)
    assert pictures[0] != pictures[1]
    with httpx.Client() as anon:
        assert_error(anon.get(body["images"][0]["url"]), 401, "missing_token")
    with images_server.client(images_server.signup_and_login()) as other:
        assert_error(other.get(body["images"][0]["url"]), 404, "file_not_found")


def test_images_join_an_existing_conversation(images_server, api):
    conversation_id = api.post("/conversations", json={"title": "drawings"}).json()["id"]
    body = generate(api, conversation_id=conversation_id, size="64x64")
    assert body["conversation_id"] == conversation_id
    (item,) = body["images"]
    sidecars = [p for p in stored_files(images_server) if p.name == f"{item['file_id']}.json"]
    assert len(sidecars) == 1
    meta = json.loads(sidecars[0].read_text())
    assert (meta["conversation_id"], meta["content_type"]) == (conversation_id, "image/png")
    assert api.get("/conversations", params={"limit": 50}).json()["items"][0]["id"] == conversation_id


def test_the_default_size_is_512_capped_by_the_largest_side(api):
    (item,) = generate(api)["images"]
    assert (item["width"], item["height"]) == (MAX_SIDE, MAX_SIDE)
    _, image = fetch_png(api, item["url"])
    assert image.size == (MAX_SIDE, MAX_SIDE)


def test_a_seed_gives_the_same_image_again_and_each_image_its_own_seed(api):
    first = generate(api, size="64x64", seed=42, n=2)["images"]
    again = generate(api, size="64x64", seed=42)["images"][0]
    second_alone = generate(api, size="64x64", seed=first[1]["seed"])["images"][0]
    digest = {
        name: hashlib.sha256(fetch_png(api, item["url"])[0]).hexdigest()
        for name, item in (("first", first[0]), ("again", again), ("second", first[1]), ("second_alone", second_alone))
    }
    assert digest["first"] == digest["again"]
    assert digest["second"] == digest["second_alone"]
    assert digest["first"] != digest["second"]
    unseeded = generate(api, size="64x64", n=2)["images"]
    assert 0 <= unseeded[0]["seed"] < 2**32 and unseeded[1]["seed"] == (unseeded[0]["seed"] + 1) % 2**32


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"size": "100x100"}, 422, "invalid_size", "size"),
        ({"size": "64x1024"}, 422, "invalid_size", "size"),  # over GPT_IMAGE_MAX_SIDE
        ({"size": "32x32"}, 422, "invalid_size", "size"),
        ({"size": "huge"}, 422, "string_pattern_mismatch", "size"),
        ({"n": 0}, 422, "greater_than_equal", "n"),
        ({"n": 5}, 422, "less_than_equal", "n"),
        ({"seed": -1}, 422, "greater_than_equal", "seed"),
        ({"seed": 2**32}, 422, "less_than_equal", "seed"),
        ({"prompt": ""}, 422, "string_too_short", "prompt"),
        ({"prompt": "a tall tower " * 30}, 400, "context_length_exceeded", "prompt"),
        ({"prompt": "x" * 20_001}, 413, "prompt_too_large", "prompt"),
        ({"steps": 50}, 422, "extra_forbidden", "steps"),
        ({"conversation_id": "0" * 32}, 404, "conversation_not_found", "conversation_id"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(images_server, api, body, status, code, param):
    before = stored_files(images_server)
    conversations = api.get("/conversations").json()["items"]
    response = api.post("/generate-image", json={"prompt": "a cat"} | body)
    assert_error(response, status, code, param)
    assert stored_files(images_server) == before
    assert api.get("/conversations").json()["items"] == conversations


def test_another_users_conversation_is_not_found_and_nothing_is_stored(images_server, api):
    with images_server.client(images_server.signup_and_login()) as owner:
        theirs = owner.post("/conversations", json={"title": "private"}).json()["id"]
    before = stored_files(images_server)
    response = api.post("/generate-image", json={"prompt": "a cat", "conversation_id": theirs, "size": "64x64"})
    assert_error(response, 404, "conversation_not_found", "conversation_id")
    assert stored_files(images_server) == before


def test_both_routes_need_a_token(images_server):
    with images_server.client() as anon:
        assert_error(anon.post("/generate-image", json={"prompt": "a cat"}), 401, "missing_token")
        assert_error(anon.post("/v1/images/generations", json={"prompt": "a cat"}), 401, "missing_token")
    with images_server.client("not-a-token") as forged:
        assert forged.post("/generate-image", json={"prompt": "a cat"}).status_code == 401


def _sdk(server: RuntimeServer, token: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=token, base_url=f"{server.base_url}/v1", max_retries=0)


def test_openai_sdk_gets_urls_and_b64_json(images_server, api):
    token = api.headers["authorization"].removeprefix("Bearer ")
    sdk = _sdk(images_server, token)
    by_url = sdk.images.generate(prompt="a red kite", n=2, size="128x64", extra_body={"seed": 9})
    assert by_url.created > 0 and len(by_url.data) == 2
    fetched = [fetch_png(api, item.url) for item in by_url.data]
    assert [image.size for _, image in fetched] == [(128, 64), (128, 64)]

    before = stored_files(images_server)
    inline = sdk.images.generate(prompt="a red kite", size="128x64", response_format="b64_json", extra_body={"seed": 9})
    assert stored_files(images_server) == before  # b64_json answers store nothing
    (item,) = inline.data
    assert item.url is None
    data = base64.b64decode(item.b64_json)
    assert data == fetched[0][0]  # the same seed draws the same PNG on both routes
    native = generate(api, prompt="a red kite", size="128x64", seed=9)["images"][0]
    assert fetch_png(api, native["url"])[0] == data


def test_openai_route_refuses_what_it_does_not_serve(images_server, api):
    sdk = _sdk(images_server, api.headers["authorization"].removeprefix("Bearer "))
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.images.generate(prompt="a cat", model="dall-e-3")
    assert missing.value.body["code"] == "model_not_found"
    assert sdk.images.generate(prompt="a cat", model="tiny-sd", size="64x64").data[0].url
    before = stored_files(images_server)
    for body, status, code, param in (
        ({"quality": "hd"}, 400, "unsupported_parameter", "quality"),
        ({"mask": "x"}, 400, "unknown_parameter", "mask"),
        ({"size": "1792x1024"}, 422, "invalid_size", "size"),
        ({"n": 10}, 422, "less_than_equal", "n"),
        ({"response_format": "jpeg"}, 422, "literal_error", "response_format"),
    ):
        response = api.post("/v1/images/generations", json={"prompt": "a cat"} | body)
        assert_error(response, status, code, param)
    assert api.post("/v1/images/generations", json={"prompt": "a cat", "size": "auto", "quality": "auto"}).json()[
        "data"
    ][0]["url"]
    assert len(stored_files(images_server)) == len(before) + 2  # the data file and its sidecar


def test_unconfigured_routes_answer_501(server, token):
    with server.client(token) as client:
        for path in ("/generate-image", "/v1/images/generations"):
            error = assert_error(client.post(path, json={"prompt": "a cat"}), 501, "not_configured")
            assert "GPT_IMAGE_MODEL_SOURCE" in error["message"]
        assert client.post("/generate-image", json={"prompt": "a cat", "n": 9}).status_code == 422


def test_the_pipeline_loads_from_s3(tmp_path: Path, pipeline_dir: Path, images_server, api):
    endpoint = moto_endpoint()
    bucket = f"images-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    for path in sorted(p for p in pipeline_dir.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"models/tiny-sd/{path.relative_to(pipeline_dir).as_posix()}")
    cache = tmp_path / "cache"
    server = start_runtime(
        tmp_path / "runtime",
        GPT_IMAGE_MODEL_SOURCE=f"s3://{bucket}/models/tiny-sd",
        GPT_MODEL_CACHE_DIR=str(cache),
        AWS_ENDPOINT_URL=endpoint,
        **IMAGE_ENV,
    )
    try:
        with server.client(server.signup_and_login()) as client:
            (item,) = generate(client, prompt="a harbour", size="64x128", seed=3)["images"]
            from_s3, image = fetch_png(client, item["url"])
    finally:
        stop_runtime(server)
    assert image.size == (64, 128)
    mirrored = cache / "s3" / bucket / "models" / "tiny-sd"
    assert (mirrored / "model_index.json").is_file() and (mirrored / "unet").is_dir()
    local = generate(api, prompt="a harbour", size="64x128", seed=3)["images"][0]
    assert fetch_png(api, local["url"])[0] == from_s3  # the same weights draw the same image
