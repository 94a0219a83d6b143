"""moto's server (real HTTP on loopback) as the AWS emulator for DynamoDB, S3 and Cognito tests.

One server per test session, whichever test directory asks first; it is stopped when pytest exits.
Every test isolates itself by names (tables, buckets, pools) rather than by server.

It is `python -m moto.server` with one change: requests are served one at a time. moto's backends take no
locks, and its DynamoDB transactions snapshot and restore whole tables, so two transactions served on two
threads at once can undo each other's writes, which real DynamoDB never does. Serving requests in turn
keeps every call atomic while clients still race (optimistic retries, conditional writes) as in production.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time

import httpx

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_endpoint: str | None = None
_LAUNCH = """
import os, sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
port = int(sys.argv[1])
os.environ["MOTO_PORT"] = str(port)
run_simple("127.0.0.1", port, DomainDispatcherApplication(create_backend_app), threaded=False,
           request_handler=MotoRequestHandler)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_endpoint() -> str:
    """The URL of the session's moto server, started on first use; sets fake credentials in os.environ."""
    global _endpoint
    if _endpoint is not None:
        return _endpoint
    for key, value in CREDENTIALS.items():
        os.environ.setdefault(key, value)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()

    atexit.register(stop)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/moto-api/", timeout=2).status_code == 200:
                _endpoint = url
                return url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop()
    raise RuntimeError("moto server did not start")
