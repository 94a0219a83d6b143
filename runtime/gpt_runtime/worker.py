"""`python -m gpt_runtime.worker`: process async generation jobs from GPT_QUEUE_URL until SIGTERM.

Uses the same settings, store and engine as the API; run as many as you like beside it
(redis:// or sqs:// queues; the embedded sqlite:// and memory:// queues are served by the API's
in-process worker). With GPT_WORKER_METRICS_PORT set it serves GET /metrics on GPT_HOST:that port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from gpt_runtime.app import build_runtime, close_runtime
from gpt_runtime.logging_setup import configure_logging, redact
from gpt_runtime.metrics import Metrics
from gpt_runtime.metrics_server import serve_metrics
from gpt_runtime.scrape import refresh
from gpt_runtime.services.jobs import Worker
from gpt_runtime.settings import RuntimeSettings

log = logging.getLogger("gpt_runtime.worker")


async def serve(settings: RuntimeSettings, concurrency: int) -> None:
    metrics = Metrics()
    runtime = await build_runtime(settings, metrics, embeddings=False)  # search indexes lazily: not here
    worker = Worker(runtime.jobs, runtime.queue, max_receives=settings.job_max_receives, concurrency=concurrency)
    listener = None
    if settings.worker_metrics_port:

        async def render() -> bytes:
            await refresh(metrics, runtime.engine, runtime.gate, runtime.queue)
            return metrics.render()

        listener = await serve_metrics(settings.host, settings.worker_metrics_port, render)
        log.info("worker metrics listening", extra={"host": settings.host, "port": settings.worker_metrics_port})
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    log.info("worker started", extra={"queue": redact(settings.resolved_queue_url), "concurrency": concurrency})
    try:
        await worker.run()
    finally:
        if listener is not None:
            listener.close()
        await close_runtime(runtime)
        log.info("worker stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gpt_runtime.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=2, help="jobs processed at once")
    args = parser.parse_args(argv)
    settings = RuntimeSettings()
    if settings.embedded_queue:
        parser.error(
            "GPT_QUEUE_URL is embedded (unset, sqlite:// or memory://): jobs are processed inside the API;"
            " set a redis:// or sqs:// URL"
        )
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings, args.concurrency))


if __name__ == "__main__":
    main()
