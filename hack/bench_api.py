"""Benchmark the runtime's cached, rate-limited, authenticated read path against a bare FastAPI endpoint.

Both run in the same way (one uvicorn process each, loopback), measured one after the other by the same
load generator (wrk if installed, else a Python client), and the table prints the ratio. Target: >= 0.7x
the bare endpoint's throughput.

    .venv/bin/python hack/bench_api.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BARE_APP = """
from fastapi import FastAPI
app = FastAPI()

@app.get("/conversations/{conversation_id}")
async def conversation(conversation_id: str) -> dict:
    return {"id": conversation_id, "title": "bare", "messages": []}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start_bare(tmp: Path) -> tuple[subprocess.Popen, str]:
    (tmp / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bare_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/conversations/x")
    return process, base


def start_runtime(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "GPT_PORT": str(port),
        "GPT_DATA_DIR": str(tmp / "data"),
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_MODEL_SOURCE": "fake:echo",
        "GPT_LOG_LEVEL": "WARNING",
        # High enough that the limiter counts every request but never refuses one during the run.
        "GPT_RATE_LIMIT_FREE": "100000000",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gpt_runtime"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/ready")
    return process, base


def prepare_runtime(base: str) -> tuple[str, str]:
    """A user with a conversation of a few messages; returns (token, path to read)."""
    with httpx.Client(base_url=base, timeout=30) as client:
        client.post("/auth/signup", json={"email": "bench@example.com", "password": "bench-password"})
        token = client.post("/auth/login", json={"email": "bench@example.com", "password": "bench-password"}).json()[
            "access_token"
        ]
        headers = {"Authorization": f"Bearer {token}"}
        conversation = client.post("/generate", json={"prompt": "hello bench", "temperature": 0}, headers=headers)
        path = f"/conversations/{conversation.json()['conversation_id']}"
        first = client.get(path, headers=headers)
        assert first.status_code == 200 and "x-ratelimit-limit" in first.headers
    return token, path


def run_wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict:
    args = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def percentile(name: str) -> float:
        value, unit = re.search(rf"^\s+{name}%\s+([\d.]+)(us|ms|s)", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": percentile("50"),
        "p99": percentile("99"),
        "errors": int(non_2xx.group(1)) if non_2xx else 0,
    }


def run_python(url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict:
    async def main() -> dict:
        latencies: list[float] = []
        errors = 0
        deadline = time.monotonic() + seconds
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=30) as client:

            async def worker() -> None:
                nonlocal errors
                while time.monotonic() < deadline:
                    start = time.perf_counter()
                    response = await client.get(url)
                    latencies.append((time.perf_counter() - start) * 1000)
                    errors += response.status_code >= 300

            started = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.monotonic() - started
        cuts = statistics.quantiles(latencies, n=100)
        return {"rps": len(latencies) / elapsed, "p50": cuts[49], "p99": cuts[98], "errors": errors}

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    measure = run_wrk if shutil.which("wrk") else run_python
    tool = "wrk" if measure is run_wrk else "python httpx client"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bare, bare_base = start_bare(tmp)
        try:
            measure(f"{bare_base}/conversations/warmup", 2, args.connections, {})
            bare_result = measure(f"{bare_base}/conversations/abc", args.seconds, args.connections, {})
        finally:
            bare.terminate()
            bare.wait()
        runtime, base = start_runtime(tmp)
        try:
            token, path = prepare_runtime(base)
            headers = {"Authorization": f"Bearer {token}"}
            measure(f"{base}{path}", 2, args.connections, headers)
            ours = measure(f"{base}{path}", args.seconds, args.connections, headers)
            stats = httpx.get(f"{base}/metrics").text
            hits = re.search(r'^cache_hits_total\{kind="conversation"\} (\S+)$', stats, re.M)
        finally:
            runtime.terminate()
            runtime.wait()
    ratio = ours["rps"] / bare_result["rps"]
    print(f"load: {tool}, {args.connections} connections, {args.seconds}s per endpoint, one uvicorn process each\n")
    print(f"{'endpoint':<52} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, result in (
        ("bare FastAPI GET /conversations/{id}", bare_result),
        ("runtime GET /conversations/{id} (auth+limit+cache)", ours),
    ):
        print(f"{name:<52} {result['rps']:>9.0f} {result['p50']:>8.2f} {result['p99']:>8.2f} {result['errors']:>8}")
    print(f"\nratio runtime/bare throughput: {ratio:.2f}x (target >= 0.70x)")
    print(f"cache hits on the measured route: {float(hits.group(1)) if hits else 0:.0f}")
    print(json.dumps({"bare": bare_result, "runtime": ours, "ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()
