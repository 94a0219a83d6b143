"""Checkpoints from s3:// against moto's S3 server, started here on loopback."""

import asyncio
import socket

import pytest

torch = pytest.importorskip("torch")
moto_server = pytest.importorskip("moto.server")

from gpt_model.checkpoint import build_tiny, load_source, save_checkpoint  # noqa: E402
from gpt_model.engine import ModelEngine  # noqa: E402
from gpt_model.engine_config import EngineConfig  # noqa: E402
from gpt_model.protocol import ChatMessage, GenerationRequest, SamplingParams, collect  # noqa: E402
from gpt_model.s3 import download_prefix, upload_dir  # noqa: E402

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch, s3_endpoint):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="models")
    yield client
    for obj in client.list_objects_v2(Bucket="models").get("Contents", []):
        client.delete_object(Bucket="models", Key=obj["Key"])
    client.delete_bucket(Bucket="models")


def test_save_upload_load_round_trip_through_s3(tmp_path, s3_env):
    model, tok = build_tiny(seed=5)
    save_checkpoint(tmp_path / "ckpt", model, tok)
    keys = upload_dir(tmp_path / "ckpt", "s3://models/tiny/v1")
    assert "tiny/v1/model.safetensors" in keys and "tiny/v1/config.json" in keys

    cache = tmp_path / "cache"
    loaded = load_source("s3://models/tiny/v1", cache_dir=str(cache))
    idx = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(idx), model(idx))
    weights = cache / "s3" / "models" / "tiny" / "v1" / "model.safetensors"
    first_mtime = weights.stat().st_mtime_ns
    load_source("s3://models/tiny/v1", cache_dir=str(cache))  # second time: from the local mirror
    assert weights.stat().st_mtime_ns == first_mtime

    async def serve():
        engine = ModelEngine("s3://models/tiny/v1", EngineConfig(cache_dir=str(cache), device="cpu"))
        out = await collect(
            engine, GenerationRequest("r", [ChatMessage("user", "hi")], SamplingParams(temperature=0, max_tokens=5))
        )
        await engine.close()
        return out

    _, fin = asyncio.run(serve())
    assert fin.usage.completion_tokens >= 1


def test_missing_prefix_is_a_clear_error(tmp_path, s3_env):
    with pytest.raises(FileNotFoundError, match="no objects under s3://models/absent"):
        load_source("s3://models/absent", cache_dir=str(tmp_path))


def test_a_changed_object_of_the_same_size_is_downloaded_again(tmp_path, s3_env):
    s3_env.put_object(Bucket="models", Key="m/config.json", Body=b'{"v": 1}')
    mirror = download_prefix("s3://models/m", tmp_path)
    assert (mirror / "config.json").read_bytes() == b'{"v": 1}'
    s3_env.put_object(Bucket="models", Key="m/config.json", Body=b'{"v": 2}')  # same size, new ETag
    download_prefix("s3://models/m", tmp_path)
    assert (mirror / "config.json").read_bytes() == b'{"v": 2}'


def test_object_keys_cannot_escape_the_cache_directory(tmp_path, s3_env):
    s3_env.put_object(Bucket="models", Key="evil/../../../escaped.txt", Body=b"pwned")
    with pytest.raises(ValueError, match="outside the cache directory"):
        download_prefix("s3://models/evil", tmp_path / "cache")
    assert not list(tmp_path.rglob("escaped.txt"))
    with pytest.raises(ValueError, match="relative path segment"):
        download_prefix("s3://models/../../etc", tmp_path / "cache")


def test_a_shared_cache_is_filled_once_by_concurrent_fetches(tmp_path, s3_env, s3_endpoint):
    """What the fetch-model init containers of several pods do at once on one PersistentVolumeClaim: one
    copies every object, the others wait on the lock and copy nothing; the runtime then loads from it."""
    import json
    import os
    import subprocess
    import sys

    model, tok = build_tiny(seed=7)
    save_checkpoint(tmp_path / "ckpt", model, tok)
    keys = upload_dir(tmp_path / "ckpt", "s3://models/tiny/shared")
    cache = tmp_path / "pvc"
    env = {**os.environ, "GPT_MODEL_SOURCE": "s3://models/tiny/shared", "GPT_MODEL_CACHE_DIR": str(cache)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "gpt_model.fetch"], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    reports = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(r["written"] for r in reports)[:2] == [0, 0], reports  # two found it done
    assert sum(r["written"] for r in reports) == len(keys) + 1, reports  # every object once, + the ETag record
    loaded = load_source("s3://models/tiny/shared", cache_dir=str(cache))
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(idx), model(idx))

    s3_env.put_object(
        Bucket="models", Key="tiny/shared/config.json", Body=(tmp_path / "ckpt/config.json").read_bytes() + b" "
    )
    changed = subprocess.run([sys.executable, "-m", "gpt_model.fetch"], env=env, capture_output=True, text=True)
    assert json.loads(changed.stdout)["written"] == 2  # the changed object (its ETag moved), and the record


def test_a_failed_fetch_says_why_in_one_line(tmp_path, s3_env):
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "GPT_MODEL_SOURCE": "s3://models/absent", "GPT_MODEL_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "gpt_model.fetch"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert json.loads(result.stderr.strip().splitlines()[-1])["error"].startswith("FileNotFoundError: no objects")


def test_the_engine_model_export_copies_a_gguf_object_once_and_a_checkpoint_prefix(tmp_path, s3_env):
    """`python -m gpt_model.fetch --engine ...`: what the fetch-engine-model init container runs."""
    from gpt_model.fetch import main
    from gpt_model.paths import smollm2_gguf

    gguf = smollm2_gguf()
    s3_env.upload_file(str(gguf), "models", "llama/smollm2.gguf")
    into = tmp_path / "engine-model"
    argv = ["--engine", "llamacpp", "--source", "s3://models/llama/smollm2.gguf", "--into", str(into)]
    assert main(argv=argv) == 0
    assert (into / "model.gguf").read_bytes()[:4] == b"GGUF"
    assert (into / "model.gguf").stat().st_size == gguf.stat().st_size
    stamp = (into / "model.gguf").stat().st_mtime_ns
    assert main(argv=argv) == 0 and (into / "model.gguf").stat().st_mtime_ns == stamp  # a second pod copies nothing

    model, tok = build_tiny()
    save_checkpoint(tmp_path / "ckpt", model, tok)
    upload_dir(tmp_path / "ckpt", "s3://models/tiny")
    vllm = ["--engine", "vllm", "--source", "s3://models/tiny", "--into", str(into)]
    assert main(argv=vllm) == 0
    assert (into / "model" / "config.json").exists() and list((into / "model").glob("*.safetensors"))

    missing = ["--engine", "llamacpp", "--source", "s3://models/nope.gguf", "--into", str(tmp_path / "x")]
    assert main(argv=missing) == 1
    assert not (tmp_path / "x" / "model.gguf").exists()


def test_the_builtin_model_export_gives_llama_cpp_the_packaged_gguf(tmp_path):
    from gpt_model.fetch import main
    from gpt_model.paths import smollm2_gguf

    into = tmp_path / "engine-model"
    assert main(argv=["--engine", "llamacpp", "--source", "builtin:smollm2-135m", "--into", str(into)]) == 0
    assert (into / "model.gguf").read_bytes() == smollm2_gguf().read_bytes()
    assert main(argv=["--engine", "llamacpp", "--source", "hf:org/name", "--into", str(into / "y")]) == 1
