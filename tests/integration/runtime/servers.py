"""Real backing servers for tests: redis-server and the job worker, as subprocesses on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from .conftest import free_port


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen
    data_dir: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)

    def start(self) -> None:
        self.process = _spawn_redis(self.port, self.data_dir)


def _spawn_redis(port: int, data_dir: Path) -> subprocess.Popen:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (hack/test.sh installs it)")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("redis-server did not start")


def start_redis(data_dir: Path) -> RedisServer:
    port = free_port()
    return RedisServer(port, _spawn_redis(port, data_dir), data_dir)


def start_worker(log_path: Path, env: dict[str, str], concurrency: int = 1) -> subprocess.Popen:
    """`python -m gpt_runtime.worker` with GPT_* settings from `env`, `concurrency` jobs at once."""
    log = log_path.open("a")
    return subprocess.Popen(
        [sys.executable, "-m", "gpt_runtime.worker", "--concurrency", str(concurrency)],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_moto(log_path: Path) -> tuple[str, subprocess.Popen]:
    """A threaded moto server of our own (SQS long polls must not stall other tests' AWS calls)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log_path.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/moto-api/", timeout=2).status_code == 200:
                return url, process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("moto server did not start")
