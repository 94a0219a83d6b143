"""An HTTP client that runs inside a pod of the cluster (standard library only), so requests go through the
Service and kube-proxy as other workloads' do. The e2e tests send this file to `kubectl exec -i POD -- python -`
with a command; it prints one JSON document.

    health URL                    one GET /health: status, body (revision, instance), headers
    count URL N                   N GETs of URL/health, each on a new connection: revisions seen, failures
    watch URL SECONDS             GET URL/health every 50 ms, each on a new connection, until the revision
                                  answering changed and only the new one answered for 5 s (or SECONDS passed)
    signup URL EMAIL PASSWORD     sign up (an existing account is fine), log in: the token answer
    metrics URL                   a pod's engine gauges (running, waiting) from its /metrics
    stream URL TOKEN MAX_TOKENS   a streaming /v1/chat/completions; prints a line `started` to stderr at the
                                  first content, then reads on slowly and reports how the stream ended
    complete URL TOKEN            a non-streaming /v1/chat/completions
    converse URL EMAIL PASSWORD   sign up, log in, the served model's id (/v1/models), one /generate answer
    cold URL EMAIL PASSWORD SECS  the first request to a sleeping deployment (a sign-up held up to SECS while it
                                  wakes): its status and seconds, then `converse`
    post URL                      an unauthenticated POST of {} to URL: its status (who may call an engine port)
    features URL EMAIL PASSWORD   what the image brings beyond the API: the web page and one hashed asset (status,
                                  type, cache headers), a /synthesize -> /transcribe round trip, a search
    load URL TOKEN SECONDS N      N threads each sending chat completions back to back for SECONDS: answers by
                                  status
"""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any


def request(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 5) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return {"status": resp.status, "body": json.loads(resp.read() or b"null"), "headers": dict(resp.headers)}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": json.loads(exc.read() or b"null"), "headers": dict(exc.headers)}


def health(url: str) -> dict[str, Any]:
    return request("GET", f"{url}/health")


def count(url: str, n: int) -> dict[str, Any]:
    revisions: dict[str, int] = {}
    failures: list[str] = []
    for _ in range(n):
        try:
            answer = health(url)
            rev = answer["body"]["revision"] if answer["status"] == 200 else f"status {answer['status']}"
            revisions[rev] = revisions.get(rev, 0) + 1
        except Exception as exc:
            failures.append(repr(exc))
    return {"revisions": revisions, "failures": failures}


def watch(url: str, seconds: float) -> dict[str, Any]:
    start = time.monotonic()
    first: str | None = None
    last_old = start
    changed = False
    revisions: dict[str, int] = {}
    failures: list[str] = []
    total = 0
    while time.monotonic() - start < seconds:
        total += 1
        try:
            answer = health(url)
            if answer["status"] != 200:
                failures.append(f"{time.monotonic() - start:.1f}s: HTTP {answer['status']} {answer['body']}")
            else:
                rev = answer["body"]["revision"]
                revisions[rev] = revisions.get(rev, 0) + 1
                first = first or rev
                if rev == first:
                    last_old = time.monotonic()
                else:
                    changed = True
        except Exception as exc:
            failures.append(f"{time.monotonic() - start:.1f}s: {exc!r}")
        if changed and time.monotonic() - last_old > 5:
            break
        time.sleep(0.05)
    return {"total": total, "revisions": revisions, "first": first, "failures": failures}


def signup(url: str, email: str, password: str) -> dict[str, Any]:
    """Sign up (an existing account is fine) and log in: the login's answer, with the access token."""
    answer = request("POST", f"{url}/auth/signup", {"email": email, "password": password}, timeout=30)
    if answer["status"] not in (201, 409):
        return answer
    return request("POST", f"{url}/auth/login", {"email": email, "password": password}, timeout=30)


def metrics(url: str) -> dict[str, Any]:
    """The engine's gauges from a pod's /metrics."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("engine_"))
    return {"running": float(values.get("engine_running", "0")), "waiting": float(values.get("engine_waiting", "0"))}


def _model(url: str, token: str) -> str:
    """The id the server serves (GET /v1/models), as an OpenAI client would pick it."""
    return request("GET", f"{url}/v1/models", token=token)["body"]["data"][0]["id"]


def _chat(model: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "stream": stream,
    }


def stream(url: str, token: str, max_tokens: int) -> dict[str, Any]:
    """Read the SSE stream slowly; report whether it finished ([DONE]), carried an error event, or broke."""
    model = _model(url, token)
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)
    conn.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(_chat(model, max_tokens, True)),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    result: dict[str, Any] = {"status": resp.status, "chunks": 0, "done": False, "error_event": None, "broke": None}
    if resp.status != 200:
        result["body"] = resp.read().decode(errors="replace")
        return result
    started = time.monotonic()
    try:
        while True:
            line = resp.readline()
            if not line:  # http.client reads an abrupt close of a chunked body as a clean end
                result["broke"] = "the connection closed before [DONE]"
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[len(b"data:") :].strip()
            if payload == b"[DONE]":
                result["done"] = True
                break
            event = json.loads(payload)
            if "error" in event:
                result["error_event"] = event["error"]
                continue
            result["chunks"] += 1
            if result["chunks"] == 1:
                print("started", file=sys.stderr, flush=True)
            time.sleep(0.2)  # a slow reader: the stream is still open when its pod is killed
    except Exception as exc:
        result["broke"] = repr(exc)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def complete(url: str, token: str) -> dict[str, Any]:
    answer = request(
        "POST", f"{url}/v1/chat/completions", _chat(_model(url, token), 16, False), token=token, timeout=60
    )
    return {"status": answer["status"], "body": answer["body"], "revision": answer["headers"].get("X-GPT-Revision")}


def converse(url: str, email: str, password: str) -> dict[str, Any]:
    """One user's conversation on one runtime: which model answers, and its reply through /generate."""
    login = signup(url, email, password)
    if login["status"] != 200:
        return {"status": login["status"], "body": login["body"]}
    token = login["body"]["access_token"]
    answer = request("POST", f"{url}/generate", {"prompt": "Say hello.", "max_tokens": 16}, token=token, timeout=120)
    return {
        "status": answer["status"],
        "model": _model(url, token),
        "content": (answer["body"] or {}).get("content"),
        "usage": (answer["body"] or {}).get("usage"),
        "body": answer["body"],
    }


def cold(url: str, email: str, password: str, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    first = request("POST", f"{url}/auth/signup", {"email": email, "password": password}, timeout=timeout)
    waited = time.monotonic() - started
    return {"first_status": first["status"], "first_body": first["body"], "waited_s": round(waited, 1)} | converse(
        url, email, password
    )


def _raw(method: str, url: str, data: bytes | None, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, data=data, method=method, headers={"Connection": "close", **headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return {"status": resp.status, "body": resp.read(), "headers": dict(resp.headers)}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read(), "headers": dict(exc.headers)}


def features(url: str, email: str, password: str) -> dict[str, Any]:
    """The web page, speech out and back in, and search by meaning, as a browser or an app would call them."""
    out: dict[str, Any] = {}
    page = _raw("GET", f"{url}/", None, {}, 10)
    html = page["body"].decode(errors="replace")
    asset = html.split('src="', 1)[1].split('"', 1)[0] if 'src="/assets/' in html else ""
    out["page"] = {"status": page["status"], "type": page["headers"].get("content-type"),
                   "cache": page["headers"].get("cache-control"), "asset": asset}  # fmt: skip
    if asset:
        got = _raw("GET", f"{url}{asset}", None, {}, 10)
        out["asset"] = {"status": got["status"], "type": got["headers"].get("content-type"),
                        "cache": got["headers"].get("cache-control"), "bytes": len(got["body"])}  # fmt: skip
    token = signup(url, email, password)["body"]["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    sentence = "i would like a cup of coffee"
    speech = _raw("POST", f"{url}/synthesize", json.dumps({"text": sentence}).encode(),
                  {**auth, "Content-Type": "application/json"}, 60)  # fmt: skip
    out["synthesize"] = {"status": speech["status"], "type": speech["headers"].get("content-type"),
                         "riff": speech["body"][:4] == b"RIFF", "bytes": len(speech["body"])}  # fmt: skip
    boundary = "gptoperatore2e"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="speech.wav"\r\n'
    form = (head + "Content-Type: audio/wav\r\n\r\n").encode() + speech["body"] + f"\r\n--{boundary}--\r\n".encode()
    form_type = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    heard = _raw("POST", f"{url}/transcribe", form, form_type, 120)
    out["transcribe"] = {"status": heard["status"], "body": json.loads(heard["body"] or b"null")}
    request("POST", f"{url}/generate", {"prompt": "How do I bake sourdough bread?", "max_tokens": 8}, token=token,
            timeout=120)  # fmt: skip
    deadline = time.monotonic() + 120
    while True:  # the embedding model loads on the first search
        found = request("GET", f"{url}/conversations/search?q=baking%20a%20loaf", token=token, timeout=60)
        if found["status"] != 503 or time.monotonic() > deadline:
            break
        time.sleep(2)
    out["search"] = {"status": found["status"], "body": found["body"]}
    return out


def post(url: str) -> dict[str, Any]:
    try:
        return {"status": request("POST", url, {})["status"]}
    except ValueError:  # a non-JSON error body
        return {"status": -1}


def load(url: str, token: str, seconds: float, threads: int) -> dict[str, Any]:
    """Keep `threads` requests in flight for `seconds` (a steady queue for the autoscaler to see)."""
    import threading

    model = _model(url, token)
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < deadline:
            try:
                answer = request("POST", f"{url}/v1/chat/completions", _chat(model, 16, False), token=token, timeout=60)
                status = str(answer["status"])
            except Exception as exc:
                status = type(exc).__name__
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"statuses": statuses}


def main(argv: list[str]) -> None:
    cmd, *args = argv
    if cmd == "health":
        out = health(args[0])
    elif cmd == "count":
        out = count(args[0], int(args[1]))
    elif cmd == "watch":
        out = watch(args[0], float(args[1]))
    elif cmd == "signup":
        out = signup(*args)
    elif cmd == "stream":
        out = stream(args[0], args[1], int(args[2]))
    elif cmd == "metrics":
        out = metrics(args[0])
    elif cmd == "complete":
        out = complete(args[0], args[1])
    elif cmd == "converse":
        out = converse(*args)
    elif cmd == "cold":
        out = cold(args[0], args[1], args[2], float(args[3]))
    elif cmd == "post":
        out = post(args[0])
    elif cmd == "features":
        out = features(*args)
    elif cmd == "load":
        out = load(args[0], args[1], float(args[2]), int(args[3]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
