"""The image service's slot: one generation at a time, a bounded waiting room, and a request that goes away
freeing the slot only once its thread has stopped. The generator is a stand-in that blocks until released."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from gpt_model.images import GeneratedImage, ImageRequestError
from gpt_runtime.domain_errors import InvalidInput, InvalidValue, ModelFailed, Unavailable
from gpt_runtime.errors import http_error
from gpt_runtime.services.images import ImageService, as_domain_error
from gpt_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.unit


class BlockingGenerator:
    """Runs until `release` is set or the caller cancels; records overlaps and the cancel flag it saw."""

    model_id = "blocking"

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.started = threading.Semaphore(0)
        self.running = 0
        self.most_at_once = 0
        self.saw_cancel = False
        self.fail = fail
        self._guard = threading.Lock()
        self._worker = ThreadPoolExecutor(2)  # two, so an overlap the service allowed would show

    def submit(self, *args, **kwargs) -> Future[list[GeneratedImage]]:
        return self._worker.submit(self.generate, *args, **kwargs)

    def generate(self, prompt, width, height, n, seed, steps, *, max_side, cancelled) -> list[GeneratedImage]:
        with self._guard:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.started.release()
        try:
            while not self.release.wait(0.01):
                if cancelled():
                    self.saw_cancel = True
                    break
            if self.fail:
                raise RuntimeError("CUDA out of memory")
            return [GeneratedImage(b"\x89PNG\r\n\x1a\n", width, height, seed)]
        finally:
            with self._guard:
                self.running -= 1


def _service(generator: BlockingGenerator, **settings: object) -> ImageService:
    return ImageService(generator, RuntimeSettings(**settings), None, None, None, None)  # type: ignore[arg-type]


async def _started(generator: BlockingGenerator) -> None:
    assert await asyncio.to_thread(generator.started.acquire, True, 5)


def test_generations_take_turns_and_a_full_waiting_room_answers_503():
    async def main() -> None:
        generator = BlockingGenerator()
        service = _service(generator, image_max_waiting=1, queue_timeout_s=5)
        first = asyncio.create_task(service._run("a", 64, 64, 1, 1))
        await _started(generator)
        second = asyncio.create_task(service._run("b", 64, 64, 1, 2))
        await asyncio.sleep(0.05)
        with pytest.raises(Unavailable) as full:
            await service._run("c", 64, 64, 1, 3)
        assert full.value.code == "queue_full" and http_error(full.value).headers == {"Retry-After": "5"}
        generator.release.set()
        assert [i.seed for i in await first] == [1]
        assert [i.seed for i in await second] == [2]
        assert generator.most_at_once == 1

    asyncio.run(main())


def test_waiting_past_the_queue_timeout_answers_503():
    async def main() -> None:
        generator = BlockingGenerator()
        service = _service(generator, queue_timeout_s=0.1)
        first = asyncio.create_task(service._run("a", 64, 64, 1, 1))
        await _started(generator)
        with pytest.raises(Unavailable) as late:
            await service._run("b", 64, 64, 1, 2)
        assert late.value.code == "queue_timeout"
        generator.release.set()
        await first

    asyncio.run(main())


def test_a_request_that_goes_away_stops_its_generation_and_frees_the_slot_only_after_it():
    async def main() -> None:
        generator = BlockingGenerator()
        service = _service(generator, queue_timeout_s=5)
        first = asyncio.create_task(service._run("a", 64, 64, 1, 1))
        await _started(generator)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert service.gate.running == 1 or generator.saw_cancel  # held until the thread has seen the cancel
        second = asyncio.create_task(service._run("b", 64, 64, 1, 2))
        await _started(generator)
        assert generator.saw_cancel  # the first stopped before the second began
        generator.release.set()
        assert [i.seed for i in await second] == [2]
        assert generator.most_at_once == 1

    asyncio.run(main())


def test_a_failing_pipeline_answers_500_and_frees_the_slot():
    async def main() -> None:
        generator = BlockingGenerator(fail=True)
        generator.release.set()
        service = _service(generator)
        with pytest.raises(ModelFailed):
            await service._run("a", 64, 64, 1, 1)
        assert service.gate.running == 0

    asyncio.run(main())


def test_request_errors_map_to_400_for_the_token_limit_and_422_otherwise():
    too_long = as_domain_error(ImageRequestError("long", param="prompt", code="context_length_exceeded"))
    bad_size = as_domain_error(ImageRequestError("size", param="size", code="invalid_size"))
    assert isinstance(too_long, InvalidInput) and not isinstance(too_long, InvalidValue)
    assert isinstance(bad_size, InvalidValue) and (bad_size.param, bad_size.code) == ("size", "invalid_size")
    assert (http_error(too_long).status, http_error(bad_size).status) == (400, 422)


def test_the_default_size_is_512_within_the_largest_side():
    assert _service(BlockingGenerator()).default_size() == (512, 512)
    assert _service(BlockingGenerator(), image_max_side=256).default_size() == (256, 256)
