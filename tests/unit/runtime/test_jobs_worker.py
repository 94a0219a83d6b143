"""The job worker's loops, the durable embedded queue, log redaction and /ready's worker check."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from fastapi.testclient import TestClient
from gpt_runtime.app import create_app
from gpt_runtime.backends import Delivery
from gpt_runtime.backends.memory import MemoryJobQueue
from gpt_runtime.backends.sqlite_queue import SQLiteJobQueue
from gpt_runtime.logging_setup import JsonFormatter, RedactingFormatter, redact
from gpt_runtime.services.jobs import JobService, Worker, backoff_s
from gpt_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.unit


class FlakyQueue(MemoryJobQueue):
    """A real in-memory queue whose calls fail while `down` is set, as a remote queue does in an outage."""

    def __init__(self) -> None:
        super().__init__(visibility_timeout_s=0.3, max_receives=5)
        self.down = False
        self.extended = 0

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("queue unreachable")

    async def receive(self, wait_s: float) -> Delivery | None:
        self._check()
        return await super().receive(min(wait_s, 0.05))

    async def ack(self, delivery: Delivery) -> None:
        self._check()
        await super().ack(delivery)

    async def extend(self, delivery: Delivery) -> None:
        self._check()
        self.extended += 1
        await super().extend(delivery)


class SlowJobs(JobService):
    """The real JobService.handle (lease renewal, ack with retries) around a job that takes `seconds`."""

    def __init__(self, queue: FlakyQueue, seconds: float):  # no store or engine: process() is replaced
        self.queue = queue
        self.seconds = seconds
        self.ran: list[str] = []

    async def process(self, delivery: Delivery) -> None:
        await asyncio.sleep(self.seconds)
        self.ran.append(delivery.body)


def test_backoff_grows_and_is_capped():
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_s(50) == 10.0


async def _run_worker(queue: FlakyQueue, jobs: SlowJobs, scenario) -> Worker:
    worker = Worker(jobs, queue, max_receives=5, concurrency=2)
    task = asyncio.create_task(worker.run())
    try:
        await scenario(worker)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
    return worker


def test_queue_errors_never_end_the_worker_loops():
    async def main() -> None:
        queue = FlakyQueue()
        jobs = SlowJobs(queue, seconds=0.6)  # twice the lease: only the heartbeat keeps it ours

        async def scenario(worker: Worker) -> None:
            await queue.enqueue("first")
            await asyncio.sleep(0.2)
            queue.down = True  # the job ends during the outage: its ack and lease renewals fail
            await asyncio.sleep(1.2)
            assert worker.problem() is None
            queue.down = False
            await queue.enqueue("second")
            for _ in range(100):
                if "second" in jobs.ran:
                    break
                await asyncio.sleep(0.05)

        worker = await _run_worker(queue, jobs, scenario)
        assert "second" in jobs.ran and worker.problem() is None

    asyncio.run(main())


def test_a_job_longer_than_its_lease_is_not_delivered_again():
    async def main() -> None:
        queue = FlakyQueue()
        jobs = SlowJobs(queue, seconds=1.0)  # more than three leases

        async def scenario(worker: Worker) -> None:
            await queue.enqueue("long")
            for _ in range(60):
                if jobs.ran:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)

        await _run_worker(queue, jobs, scenario)
        assert jobs.ran == ["long"] and queue.extended >= 2

    asyncio.run(main())


def test_a_worker_with_a_dead_loop_reports_it():
    async def main() -> None:
        queue = FlakyQueue()
        worker = Worker(SlowJobs(queue, 0.1), queue, max_receives=3, concurrency=2)
        task = asyncio.create_task(worker.run())
        await asyncio.sleep(0.05)
        assert worker.problem() is None
        worker._loops[0].cancel()
        await asyncio.sleep(0.05)
        assert worker.problem() == "job worker: 1 of 2 loops stopped"
        worker.stop()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)

    asyncio.run(main())


def test_ready_answers_503_with_the_reason_when_the_worker_is_dead(tmp_path):
    settings = RuntimeSettings(data_dir=tmp_path, model_source="fake:echo", jwt_secret="x" * 48)
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/ready").json()["checks"]["worker"] is True

        class Dead:
            def problem(self) -> str:
                return "job worker: 2 of 2 loops stopped"

        app.state.worker = Dead()
        response = client.get("/ready")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["checks"]["worker"] is False
    assert "job worker: 2 of 2 loops stopped" in response.json()["error"]["message"]


def test_sqlite_queue_leases_renews_retries_and_dead_letters(tmp_path):
    async def main() -> None:
        queue = SQLiteJobQueue(str(tmp_path / "q.db"), visibility_timeout_s=0.2, max_receives=2, poll_s=0.02)
        await queue.enqueue("a")
        first = await queue.receive(0.1)
        assert first is not None and (first.body, first.receive_count) == ("a", 1)
        assert await queue.receive(0.05) is None  # leased
        await asyncio.sleep(0.12)
        await queue.extend(first)
        await asyncio.sleep(0.12)
        assert await queue.receive(0.01) is None  # renewed: still ours
        await queue.retry(first)
        second = await queue.receive(0.1)
        assert second is not None and second.receive_count == 2
        await queue.retry(second)  # the last allowed delivery failed: dead
        assert await queue.receive(0.05) is None
        assert await queue.dead_letters() == ["a"]
        await queue.enqueue("b")
        third = await queue.receive(0.1)
        await queue.ack(third)
        await queue.ack(third)  # twice is harmless
        assert await queue.receive(0.05) is None
        await queue.close()

    asyncio.run(main())


def test_sqlite_queue_gives_back_what_a_crashed_process_had_in_flight(tmp_path):
    async def main() -> None:
        path = str(tmp_path / "q.db")
        crashed = SQLiteJobQueue(path, visibility_timeout_s=300)
        for body in ("x", "y"):
            await crashed.enqueue(body)
        assert (await crashed.receive(0.1)).body == "x"  # in flight when the process dies
        await crashed.close()  # the file is all that survives a kill -9
        restarted = SQLiteJobQueue(path, visibility_timeout_s=300)
        got = [(await restarted.receive(0.1)).body for _ in range(2)]
        assert sorted(got) == ["x", "y"]
        await restarted.close()

    asyncio.run(main())


def test_url_credentials_are_redacted_in_every_part_of_a_log_line():
    assert redact("redis://user:s3cret@h:6379/0?queue=q") == "redis://[REDACTED]@h:6379/0?queue=q"
    assert redact("rediss://:s3cret@h/0") == "rediss://[REDACTED]@h/0"
    assert redact("GET /ws?access_token=abc&x=1") == "GET /ws?access_token=[REDACTED]&x=1"
    assert redact("mail ann@example.com, see https://example.com/a@b") == (
        "mail ann@example.com, see https://example.com/a@b"
    )
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "worker started", (), None)
    record.queue = "redis://default:s3cret@127.0.0.1:6379/0"
    line = RedactingFormatter(JsonFormatter()).format(record)
    assert "s3cret" not in line and json.loads(line)["queue"] == "redis://[REDACTED]@127.0.0.1:6379/0"


def test_one_process_owns_an_embedded_queue_file(tmp_path):
    async def main() -> None:
        path = str(tmp_path / "q.db")
        owner = SQLiteJobQueue(path)
        with pytest.raises(RuntimeError, match="in use by another process"):
            SQLiteJobQueue(path)
        await owner.close()
        successor = SQLiteJobQueue(path)  # free again once the owner is gone
        await successor.close()

    asyncio.run(main())


def test_an_embedded_queue_without_an_in_process_worker_is_refused_at_start(tmp_path):
    settings = RuntimeSettings(
        data_dir=tmp_path, model_source="fake:echo", jwt_secret="x" * 48, worker_in_process=False
    )
    with pytest.raises(RuntimeError, match="no process could run the jobs"), TestClient(create_app(settings)):
        pass
