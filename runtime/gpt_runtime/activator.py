"""`python -m gpt_runtime.activator`: the pod a sleeping GPTDeployment's client Service points at.

It holds each request until the runtime behind GPT_ACTIVATOR_UPSTREAM (the Service of the runtime pods) answers
GET /ready with 200, then proxies it there: HTTP streamed both ways (SSE chunk by chunk), WebSockets message by
message. Meanwhile its /metrics says "activity" (`gpt_last_request_timestamp_seconds` reads now while anything is
held), which the operator, polling the client Service's /metrics, takes as the signal to wake the deployment.

Answered here, never proxied and never activity:
- GET /health: 200, the activator's own liveness and readiness probe.
- GET /metrics: this process's series (docs/metrics.md, "Activator metrics").
- GET /ready: 503 `asleep` (an uptime monitor must not wake the model) unless the upstream is known ready
  (a held request woke it), then the upstream's own answer.

A request not answered within GPT_ACTIVATOR_WAKE_TIMEOUT_SECONDS gets 503 `model_waking_up` with Retry-After, in
the runtime's error shape (gpt_runtime.errors.error_body). A refused connection to a ready upstream (its pods went
away) makes readiness unknown again: the request goes back to waiting. Logs name a request's method, path, wait
and outcome, never its query, headers or body (they carry tokens).

Light on purpose: no FastAPI, no torch, no gpt_model; prometheus_client, httpx, websockets and uvicorn only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Literal

import httpx
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Origin, Subprotocol

from gpt_runtime.logging_setup import configure_logging
from gpt_runtime.metrics import LastRequest

log = logging.getLogger("gpt_runtime.activator")

LOCAL_PATHS = frozenset({"/health", "/ready", "/metrics"})
OUTCOMES = ("proxied", "timeout", "upstream_error")
RETRY_AFTER_S = 30
# RFC 9110 7.6.1, plus what a proxy must not pass on either way (its own framing, the client's 100-continue)
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection", b"te",
    b"trailer", b"transfer-encoding", b"upgrade", b"expect",
})  # fmt: skip
WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 180, 300, 600)


class ActivatorSettings(BaseSettings):
    """The activator's environment (GPT_ACTIVATOR_*)."""

    model_config = SettingsConfigDict(env_prefix="GPT_ACTIVATOR_", env_file=None, extra="ignore")

    upstream: str = Field(description="The runtime pods' Service, e.g. http://chat-runtime.ns.svc:80")
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    wake_timeout_seconds: float = Field(default=300.0, gt=0, description="How long a request is held")
    poll_seconds: float = Field(default=0.5, gt=0, description="Between two GET {upstream}/ready while held")
    # SIGTERM: held and open requests may finish for this long (default: the wake timeout + 10 s; the operator
    # gives the pod the wake timeout + 30 s)
    shutdown_timeout_seconds: float | None = Field(default=None, gt=0)
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if "$(" in value:  # the kubelet expands $(X_SERVICE_HOST) only for Services that existed at the pod's start
            raise ValueError(
                f"GPT_ACTIVATOR_UPSTREAM is {value!r}: the runtime Service did not exist when this pod started;"
                " it is created before the activator, so a restart of this pod finds it"
            )
        url = httpx.URL(value.strip())
        if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
            raise ValueError(
                "GPT_ACTIVATOR_UPSTREAM must be an http:// or https:// URL without query, e.g. http://svc:80"
            )
        return str(url).rstrip("/")


def error_body(message: str, type_: str, code: str) -> dict:
    """The runtime's error shape (gpt_runtime.errors.error_body), without importing FastAPI."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class ActivatorMetrics:
    """The activator's series, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.last_request = LastRequest(
            "Unix time of the last API request this process received (health/readiness probes and /metrics"
            " excluded; now while one is held or proxied); 0 until the first one.",
            initial=0.0,
        )
        self.registry.register(self.last_request)
        self.waiting = Gauge(
            "gpt_activator_waiting_requests", "Requests held until the runtime is ready.", registry=self.registry
        )
        self.requests = Counter(
            "gpt_activator_requests",
            "Held requests by outcome: proxied, timeout (not ready in time), upstream_error.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        self.wait = Histogram(
            "gpt_activator_wait_seconds",
            "How long a request waited for the runtime to be ready (0 when it already was).",
            registry=self.registry,
            buckets=WAIT_BUCKETS,
        )
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Upstream:
    """Whether the runtime answers GET /ready with 200: known once one poller task saw it, forgotten when a
    connection to it is refused. The poller runs only while someone waits."""

    def __init__(self, client: httpx.AsyncClient, url: str, poll_s: float, metrics: ActivatorMetrics):
        self.client = client
        self.url = url
        self.poll_s = poll_s
        self.metrics = metrics
        self.ready = asyncio.Event()
        self.waiters = 0
        self._poller: asyncio.Task[None] | None = None

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once the upstream is ready, False after `timeout_s` without."""
        if self.ready.is_set():
            return True
        if timeout_s <= 0:
            return False
        self.waiters += 1
        self.metrics.waiting.inc()
        try:
            if self._poller is None or self._poller.done():
                self._poller = asyncio.create_task(self._poll())
            async with asyncio.timeout(timeout_s):
                await self.ready.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self.waiters -= 1
            self.metrics.waiting.dec()

    def forget(self) -> None:
        """The upstream refused a connection: poll again before the next request goes there."""
        self.ready.clear()

    async def probe(self) -> bool:
        try:
            response = await self.client.get(f"{self.url}/ready", timeout=httpx.Timeout(min(5.0, 1 + self.poll_s)))
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _poll(self) -> None:
        while self.waiters > 0 and not self.ready.is_set():
            if await self.probe():
                log.info("upstream ready", extra={"waiting": self.waiters})
                self.ready.set()
                return
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


class _NotConnected(Exception):
    """The upstream could not be reached; `body_read`: the request's body had begun to be read (so it cannot be
    sent again)."""

    def __init__(self, body_read: bool):
        super().__init__("upstream not reachable")
        self.body_read = body_read


class _UpstreamFailed(Exception):
    """The upstream took the connection but failed before answering."""


class _UpstreamBroke(Exception):
    """The upstream failed after its answer had started, or the client left: the connection closes unfinished."""


@dataclass
class _Held:
    """One held request's bookkeeping, for its metrics and its log line."""

    waited_s: float = 0.0
    outcome: str = "upstream_error"
    status: int = 502


def _header_tokens(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    return {token.strip().lower() for key, value in headers if key == name for token in value.split(b",")}


def _strip(headers: Iterable[tuple[bytes, bytes]], also: Iterable[bytes] = ()) -> list[tuple[bytes, bytes]]:
    """Headers without the hop-by-hop ones (those the Connection header names included) and `also`."""
    headers = [(key.lower(), value) for key, value in headers]
    drop = HOP_BY_HOP | _header_tokens(headers, b"connection") | set(also)
    return [(key, value) for key, value in headers if key not in drop]


def forwarded_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The request's end-to-end headers plus X-Forwarded-For (the client appended) and X-Forwarded-Proto (kept
    from an edge proxy, else this connection's scheme)."""
    raw = list(scope.get("headers", []))
    headers = _strip(raw, also=(b"x-forwarded-for", b"x-forwarded-proto"))
    chain = [value.strip() for key, value in raw if key == b"x-forwarded-for" and value.strip()]
    client = scope.get("client")
    if client:
        chain.append(str(client[0]).encode())
    if chain:
        headers.append((b"x-forwarded-for", b", ".join(chain)))
    proto = next((value for key, value in raw if key == b"x-forwarded-proto"), None)
    if proto is None:
        proto = b"https" if scope.get("scheme") in ("https", "wss") else b"http"
    headers.append((b"x-forwarded-proto", proto))
    return headers


class Activator:
    """The ASGI app: local /health, /ready and /metrics; every other request held, then proxied."""

    def __init__(self, settings: ActivatorSettings):
        self.settings = settings
        self.metrics = ActivatorMetrics()
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=10.0, read=None, write=None, pool=None),  # streams may be long
            # idle connections dropped before uvicorn's own 5 s keep-alive ends them under a request
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32, keepalive_expiry=2.0),
            follow_redirects=False,
        )
        for name in list(self.client.headers):  # httpx's defaults (Accept-Encoding, User-Agent): the client's only
            del self.client.headers[name]
        self.upstream = Upstream(self.client, settings.upstream, settings.poll_seconds, self.metrics)
        base = httpx.URL(settings.upstream)
        self._base_path = base.raw_path.rstrip(b"/")
        self._ws_base = base.copy_with(scheme="wss" if base.scheme == "https" else "ws")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["path"] in LOCAL_PATHS:
                await self._local(scope, send)
            else:
                await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                log.info("activator started", extra={"upstream": self.settings.upstream})
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.close()
                await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- local answers -------------------------------------------------------------------------------------

    async def _local(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            body = error_body("Method Not Allowed", "invalid_request_error", "method_not_allowed")
            await _answer(send, 405, _json(body), [(b"allow", b"GET, HEAD")])
        elif path == "/health":
            health = {"status": "ok", "role": "activator", "upstream_ready": self.upstream.ready.is_set()}
            await _answer(send, 200, _json(health))
        elif path == "/metrics":
            await _answer(send, 200, self.metrics.render(), content_type=CONTENT_TYPE_LATEST.encode())
        else:
            await self._ready(send)

    async def _ready(self, send: Send) -> None:
        """The upstream's /ready when it is known ready (not activity), else 503 asleep."""
        if self.upstream.ready.is_set():
            try:
                response = await self.client.get(f"{self.settings.upstream}/ready", timeout=httpx.Timeout(5.0))
            except httpx.HTTPError:
                self.upstream.forget()
            else:
                content_type = response.headers.get("content-type", "application/json").encode()
                await _answer(send, response.status_code, response.content, content_type=content_type)
                return
        body = error_body("asleep: the model starts on the first API request", "overloaded", "asleep")
        await _answer(send, 503, _json(body))

    # -- held HTTP -----------------------------------------------------------------------------------------

    def _target(self, scope: Scope) -> bytes:
        path = self._base_path + (scope.get("raw_path") or scope["path"].encode())
        query = scope.get("query_string", b"")
        return path + b"?" + query if query else path

    async def _hold(self, held: _Held, deadline: float) -> bool:
        """Wait for the upstream until `deadline` (loop time), adding the wait to `held`."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            return await self.upstream.wait_ready(deadline - started)
        except asyncio.CancelledError:  # the server stopped before the runtime was ready
            held.outcome, held.status = "timeout", 503
            raise
        finally:
            held.waited_s += loop.time() - started

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        held = _Held()
        deadline = asyncio.get_running_loop().time() + self.settings.wake_timeout_seconds
        self.metrics.last_request.begin()
        try:
            while True:
                if not await self._hold(held, deadline):
                    held.outcome, held.status = "timeout", 503
                    await _waking(send)
                    return
                try:
                    await self._proxy_http(scope, receive, send, held)
                    return
                except _NotConnected as exc:
                    self.upstream.forget()
                    if exc.body_read:
                        await _bad_gateway(send)
                        return
                except _UpstreamFailed:
                    await _bad_gateway(send)
                    return
                except _UpstreamBroke:
                    return  # uvicorn closes the connection: the client sees the answer cut short
        finally:
            self.metrics.last_request.end()
            self._done(scope, held)

    async def _proxy_http(self, scope: Scope, receive: Receive, send: Send, held: _Held) -> None:
        """Send the request upstream and stream the answer back (`held` records its status). _NotConnected when
        the upstream refused the connection, _UpstreamFailed when it failed before answering."""
        headers = forwarded_headers(scope)
        length = next((value for key, value in headers if key == b"content-length"), None)
        chunked = b"chunked" in _header_tokens(scope.get("headers", []), b"transfer-encoding")
        read = False

        async def body() -> AsyncIterator[bytes]:
            nonlocal read
            while True:
                message = await receive()
                read = True
                if message["type"] == "http.disconnect":
                    raise _UpstreamBroke("client left while sending its body")
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body", False):
                    return

        has_body = chunked or (length is not None and length.strip() != b"0")
        request = self.client.build_request(
            scope["method"],
            httpx.URL(self.settings.upstream).copy_with(raw_path=self._target(scope)),
            headers=headers,
            content=body() if has_body else None,
        )
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _NotConnected(read) from exc
        except httpx.TransportError as exc:
            log.warning("upstream failed", extra={"path": scope["path"], "error": type(exc).__name__})
            raise _UpstreamFailed from exc
        held.outcome, held.status = "proxied", response.status_code
        try:
            await self._stream(response, receive, send)
        finally:
            await response.aclose()

    async def _stream(self, response: httpx.Response, receive: Receive, send: Send) -> None:
        """The upstream's answer to the client as it arrives; stops (the upstream sees a disconnect) as soon as
        the client leaves."""
        headers = _strip(response.headers.raw, also=(b"date", b"server"))
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})

        async def pump() -> None:
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TransportError as exc:
                raise _UpstreamBroke(type(exc).__name__) from exc
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def client_left() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        streaming, watching = asyncio.create_task(pump()), asyncio.create_task(client_left())
        try:
            await asyncio.wait({streaming, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streaming, watching):
                task.cancel()
            await asyncio.gather(streaming, watching, return_exceptions=True)
        if streaming.done() and not streaming.cancelled() and streaming.exception() is not None:
            log.warning("upstream broke off its answer", extra={"error": str(streaming.exception())})
            raise _UpstreamBroke from streaming.exception()

    # -- held WebSockets -----------------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        held = _Held(status=101)
        deadline = asyncio.get_running_loop().time() + self.settings.wake_timeout_seconds
        upstream: ClientConnection | None = None
        self.metrics.last_request.begin()
        try:
            while upstream is None:
                if not await self._hold(held, deadline):
                    held.outcome, held.status = "timeout", 503
                    await _deny(scope, send, 503, _json(_waking_body()), retry_after=True)
                    return
                try:
                    upstream = await self._connect_ws(scope)
                except _NotConnected:
                    self.upstream.forget()
                except InvalidStatus as exc:  # the runtime refused the handshake: its answer, as it gave it
                    held.outcome, held.status = "proxied", exc.response.status_code
                    await _deny(scope, send, exc.response.status_code, bytes(exc.response.body or b""))
                    return
                except InvalidHandshake as exc:
                    log.warning("upstream WebSocket handshake failed", extra={"error": type(exc).__name__})
                    await _deny(scope, send, 502, _json(_bad_gateway_body()))
                    return
            held.outcome = "proxied"
        finally:
            self.metrics.last_request.end()
            self._done(scope, held)
        try:
            # the runtime's own headers (X-Request-ID, X-GPT-Revision) with its chosen subprotocol
            response_headers = upstream.response.headers.raw_items() if upstream.response else []
            accept_headers = [(k.lower().encode(), v.encode()) for k, v in response_headers if k.lower()[:2] == "x-"]
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": accept_headers})
            await self._pump_ws(upstream, receive, send)
        except OSError:
            pass  # the client left
        finally:
            await upstream.close()

    async def _connect_ws(self, scope: Scope) -> ClientConnection:
        headers = forwarded_headers(scope)
        passed = {b"authorization", b"cookie", b"user-agent", b"x-request-id", b"x-forwarded-for", b"x-forwarded-proto"}
        origin = next((v.decode("latin-1") for k, v in headers if k == b"origin"), None)
        url = self._ws_base.copy_with(raw_path=self._target(scope))
        try:
            return await connect(
                str(url),
                additional_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k in passed],
                subprotocols=[Subprotocol(p) for p in scope.get("subprotocols", [])] or None,
                origin=Origin(origin) if origin else None,
                user_agent_header=None,
                open_timeout=10,
                max_size=None,  # the runtime sets its own limit on what it receives
            )
        except (OSError, TimeoutError) as exc:
            raise _NotConnected(body_read=False) from exc

    async def _pump_ws(self, upstream: ClientConnection, receive: Receive, send: Send) -> None:
        """Messages both ways until either side closes; each close code passes on."""
        activity = self.metrics.last_request

        async def from_client() -> None:
            """Until the client leaves (its close code goes upstream) or the upstream has closed."""
            with contextlib.suppress(ConnectionClosed):
                while True:
                    message = await receive()
                    activity.touch()
                    if message["type"] == "websocket.receive":
                        text = message.get("text")
                        await upstream.send(text if text is not None else message.get("bytes") or b"")
                    elif message["type"] == "websocket.disconnect":
                        code = _close_code(message.get("code", 1000), abnormal=1001)
                        await upstream.close(code, message.get("reason") or "")
                        return

        client = asyncio.create_task(from_client())
        try:
            with contextlib.suppress(ConnectionClosed):
                async for data in upstream:  # until it closes: by itself, or because the client left
                    activity.touch()
                    await send({"type": "websocket.send", "text" if isinstance(data, str) else "bytes": data})
            code = _close_code(upstream.close_code or 1000, abnormal=1014)
            await send({"type": "websocket.close", "code": code, "reason": upstream.close_reason or ""})
        finally:
            client.cancel()
            await asyncio.gather(client, return_exceptions=True)

    def _done(self, scope: Scope, held: _Held) -> None:
        self.metrics.requests.labels(held.outcome).inc()
        self.metrics.wait.observe(held.waited_s)
        log.info(
            "held request",
            extra={
                "method": scope.get("method", "WS"),
                "path": scope["path"],
                "waited_s": round(held.waited_s, 3),
                "outcome": held.outcome,
                "status": held.status,
            },
        )


def _close_code(code: int, *, abnormal: int) -> int:
    """A close code a close frame may carry: 1005 (none given) is 1000, a connection lost (1006) or any other
    reserved code `abnormal`."""
    if code == 1005:
        return 1000
    return code if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999 else abnormal


def _json(body: dict) -> bytes:
    return json.dumps(body).encode()


def _waking_body() -> dict:
    return error_body("the model is waking up: try again shortly", "overloaded", "model_waking_up")


def _bad_gateway_body() -> dict:
    return error_body("the model could not be reached", "api_error", "upstream_unavailable")


async def _answer(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"application/json",
) -> None:
    head = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _waking(send: Send) -> None:
    await _answer(send, 503, _json(_waking_body()), [(b"retry-after", str(RETRY_AFTER_S).encode())])


async def _bad_gateway(send: Send) -> None:
    await _answer(send, 502, _json(_bad_gateway_body()))


async def _deny(scope: Scope, send: Send, status: int, body: bytes, *, retry_after: bool = False) -> None:
    """Refuse a WebSocket handshake with an HTTP answer where the server allows it, else close it (1013: try
    again later)."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1013 if status == 503 else 1014})
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", str(RETRY_AFTER_S).encode()))
    message: Message = {"type": "websocket.http.response.start", "status": status, "headers": headers}
    await send(message)
    await send({"type": "websocket.http.response.body", "body": body})


class ActivatorServer(uvicorn.Server):
    """uvicorn, where SIGTERM (how a pod stops) is a clean stop: open requests may finish within the graceful
    timeout and the process exits 0 (uvicorn itself re-raises the signal after shutdown). A second one: at once."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
            return
        self.force_exit = self.should_exit
        self.should_exit = True


def main() -> None:
    settings = ActivatorSettings()  # type: ignore[call-arg]  # upstream comes from the environment
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per call, URLs with queries: ours says enough
    config = uvicorn.Config(
        Activator(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout_seconds or settings.wake_timeout_seconds + 10),
    )
    ActivatorServer(config).run()


if __name__ == "__main__":
    main()
