"""uvicorn's HTTP/1.1 protocol, answering what it rejects itself with the project's JSON error body.

A request uvicorn cannot parse (a malformed request line or header, broken chunked framing, conflicting
Content-Length and Transfer-Encoding) never reaches the app: uvicorn answers 400 with a text/plain
"Invalid HTTP request received.". These subclasses send {"error": {..., "code": "invalid_http"}} instead.

What stays the websockets library's own (uvicorn hands it the handshake before the app sees it): a WebSocket
upgrade it rejects, e.g. without Sec-WebSocket-Key, answers 400 text/plain. (A WebSocket to no route gets a JSON
404 from the app: gpt_runtime.errors.) uvicorn's own 500 (the app raised before answering) and 503
(limit_concurrency) are never sent: the app's outermost handler answers every exception, and no limit is set.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.protocols.http.h11_impl import H11Protocol

from gpt_runtime.errors import error_body


def invalid_http_body(message: str) -> bytes:
    return json.dumps(error_body(message, "invalid_request_error", None, "invalid_http")).encode()


class H11JSONErrors(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = invalid_http_body(msg)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body)):
            self.transport.write(self.conn.send(event))
        self.transport.write(self.conn.send(h11.EndOfMessage()))
        self.transport.close()


HTTP_PROTOCOL: type[asyncio.Protocol] = H11JSONErrors

try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    pass
else:

    class HttpToolsJSONErrors(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            body = invalid_http_body(msg)
            content = [STATUS_LINE[400]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    body,
                ]
            )
            self.transport.write(b"".join(content))
            self.transport.close()

    if AutoHTTPProtocol is HttpToolsProtocol:
        HTTP_PROTOCOL = HttpToolsJSONErrors
