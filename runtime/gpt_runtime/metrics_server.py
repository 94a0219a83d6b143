"""A metrics-only HTTP listener for processes without the API (the job worker): GET /metrics, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("gpt_runtime.metrics")


def response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    """An HTTP/1.1 response that closes the connection."""
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    return head.encode() + b"\r\n" + body


async def serve_metrics(host: str, port: int, render: Callable[[], Awaitable[bytes]]) -> asyncio.Server:
    """Listen on host:port; GET /metrics answers `await render()`, anything else 404 (HEAD is not supported)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers: none matter
            method, path = [*request_line.decode("latin-1").split(), "", ""][:2]
            if method == "GET" and path.split("?", 1)[0] == "/metrics":
                writer.write(response("200 OK", await render(), CONTENT_TYPE_LATEST))
            else:
                writer.write(response("404 Not Found", b"only GET /metrics is served here\n"))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        except Exception:
            log.exception("metrics request failed")
            with contextlib.suppress(ConnectionError):
                writer.write(response("500 Internal Server Error", b"metrics failed\n"))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)
