"""Locust load test of the runtime: what a user of the API does, every endpoint named by its route template.

    locust -f hack/locustfile.py --host=http://127.0.0.1:8000            (web UI on :8089)
    bash hack/load_test.sh                                              (headless, bounded, fails on any error)

Each simulated user signs up with a unique address, mistypes its password once (a 401 it expects), logs in, then
repeats a journey: create a conversation, read it twice (the second read is a cache hit), converse over REST (the
first prompt is a common, seeded opener: the response cache can answer it), stream a reply over SSE, start an async
job and poll it until it is done, export the conversation as JSON, read /usage. Replies are short
(LOCUST_MAX_TOKENS, default 16) so a CPU runtime keeps up. Run it against a runtime whose limits and quotas are
off (hack/load_test.sh does), or the 429s count as failures.
"""

from __future__ import annotations

import json
import os
import time
import uuid

from locust import HttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser

MAX_TOKENS = int(os.environ.get("LOCUST_MAX_TOKENS", "16"))
JOB_TIMEOUT_S = float(os.environ.get("LOCUST_JOB_TIMEOUT_S", "60"))
PASSWORD = "correct horse battery staple"
OPENER = "Hello! What can you do?"
# every request the journey makes, as Locust's table names them: a run that missed one fails (see below)
ROUTES = (
    "POST /auth/signup", "POST /auth/login (wrong password)", "POST /auth/login", "POST /conversations",
    "GET /conversations/{conversation_id}", "POST /generate", "POST /generate (sse)", "POST /generate (async)",
    "GET /jobs/{job_id}", "GET /conversations/{conversation_id}/export", "GET /usage",
)  # fmt: skip


@events.quitting.add_listener
def _every_route_ran(environment: Environment, **_kwargs) -> None:
    """Exit 1 when a route of the journey never completed (too short a run, or a user stopped early)."""
    seen = {name for (name, _method), entry in environment.stats.entries.items() if entry.num_requests}
    missing = [route for route in ROUTES if route not in seen]
    if missing:
        print(f"locustfile: no request completed for {', '.join(missing)}")
        environment.process_exit_code = 1


class ApiUser(HttpUser):
    """One account using the conversation API; every request is named by its route template."""

    wait_time = between(0.2, 1.0)

    def on_start(self) -> None:
        self.email = f"load-{uuid.uuid4().hex}@example.com"
        account = {"email": self.email, "password": PASSWORD}
        with self.client.post("/auth/signup", json=account, name="POST /auth/signup", catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"signup: {r.status_code} {r.text[:200]}")
                raise StopUser
        wrong = {"email": self.email, "password": "not the password"}
        with self.client.post("/auth/login", json=wrong, name="POST /auth/login (wrong password)",
                              catch_response=True) as r:  # fmt: skip
            if r.status_code == 401:
                r.success()
            else:
                r.failure(f"a wrong password answered {r.status_code}, not 401")
        with self.client.post("/auth/login", json=account, name="POST /auth/login", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"login: {r.status_code} {r.text[:200]}")
                raise StopUser
            self.client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    @task
    def journey(self) -> None:
        """One conversation, start to end, over every transport."""
        conversation = self._json("POST", "/conversations", json={"title": "load test"}, expect=201)
        if conversation is None:
            return
        cid = conversation["id"]
        for _ in range(2):
            self._json("GET", f"/conversations/{cid}", name="GET /conversations/{conversation_id}")
        params = {"conversation_id": cid, "max_tokens": MAX_TOKENS}
        self._json("POST", "/generate", name="POST /generate", json={"prompt": OPENER, "seed": 1, **params})
        self._json("POST", "/generate", name="POST /generate", json={"prompt": "Tell me more.", **params})
        self._stream(params)
        self._job(params)
        export = "GET /conversations/{conversation_id}/export"
        self._json("GET", f"/conversations/{cid}/export?format=json", name=export)
        self._json("GET", "/usage")

    def _json(self, method: str, path: str, *, name: str | None = None, expect: int = 200, **kwargs) -> dict | None:
        """A request that must answer `expect` with a JSON body; None (and a failure recorded) otherwise."""
        with self.client.request(method, path, name=name or f"{method} {path}", catch_response=True, **kwargs) as r:
            if r.status_code != expect:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return None
            try:
                return r.json()
            except ValueError:
                r.failure(f"not JSON: {r.text[:200]}")
                return None

    def _stream(self, params: dict) -> None:
        """POST /generate over SSE, timed until `data: [DONE]` (not only until the headers)."""
        started = time.perf_counter()
        body = {"prompt": "Stream a short answer.", "stream": True, **params}
        with self.client.post("/generate", json=body, stream=True, name="POST /generate (sse)",
                              catch_response=True) as r:  # fmt: skip
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {r.text[:200]}")
                return
            chunks, done = 0, False
            for line in r.iter_lines(decode_unicode=True):
                if line == "data: [DONE]":
                    done = True
                    break
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        r.failure(f"error event: {event['error']}")
                        return
                    chunks += 1
            # the whole stream's time, not only the time to its headers, in Locust's table
            r.request_meta["response_time"] = (time.perf_counter() - started) * 1000
            if not done or chunks == 0:
                r.failure(f"stream ended without [DONE] ({chunks} chunks)")

    def _job(self, params: dict) -> None:
        """POST /generate with "async": true, then GET /jobs/{job_id} until it succeeds (or fails)."""
        accepted = self._json("POST", "/generate", name="POST /generate (async)", expect=202,
                              json={"prompt": "Answer later.", "async": True, **params})  # fmt: skip
        if accepted is None:
            return
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            with self.client.get(accepted["location"], name="GET /jobs/{job_id}", catch_response=True) as r:
                job = r.json() if r.status_code == 200 else None
                if job is None:
                    r.failure(f"{r.status_code}: {r.text[:200]}")
                    return
                if job["status"] == "succeeded":
                    return
                if job["status"] == "failed":
                    r.failure(f"job failed: {job['error']}")
                    return
            time.sleep(0.2)
        self.environment.events.request.fire(
            request_type="JOB", name="GET /jobs/{job_id}", response_time=JOB_TIMEOUT_S * 1000, response_length=0,
            exception=TimeoutError(f"job {accepted['job_id']} not done in {JOB_TIMEOUT_S} s"), context={},
        )  # fmt: skip
