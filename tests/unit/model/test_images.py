"""Image generation on a tiny random diffusers pipeline, built here: the real loading and inference code."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from gpt_model.images import (
    MAX_SEED,
    GenerationCancelled,
    ImageGenerator,
    ImageRequestError,
    image_seed,
    open_image_generator,
    parse_size,
    resolve_source,
)
from gpt_model.images_tiny import build_tiny_pipeline, main
from PIL import Image

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("images") / "tiny-sd")


@pytest.fixture(scope="module")
def generator(pipeline_dir: Path) -> ImageGenerator:
    return open_image_generator(str(pipeline_dir))


def _png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_the_builder_writes_a_diffusers_pipeline(pipeline_dir: Path):
    names = {p.relative_to(pipeline_dir).as_posix() for p in pipeline_dir.rglob("*") if p.is_file()}
    assert "model_index.json" in names
    for component in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert any(name.startswith(component + "/") for name in names), component
    assert not any(name.startswith(".") for name in names)


def test_the_builder_runs_as_a_module_entry_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main([str(tmp_path / "out"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert resolve_source(str(tmp_path / "out")) == tmp_path / "out"


def test_generate_makes_pngs_of_the_asked_size(generator: ImageGenerator):
    images = generator.generate("a red fox in the snow", 96, 64, n=2, seed=7, steps=2)
    assert [(i.width, i.height, i.seed) for i in images] == [(96, 64, 7), (96, 64, 8)]
    for image in images:
        decoded = _png(image.png)
        assert decoded.size == (96, 64) and decoded.mode == "RGB"
    assert images[0].png != images[1].png


def test_the_same_seed_gives_the_same_bytes_and_another_seed_another_image(generator: ImageGenerator):
    first = generator.generate("a lighthouse", 64, 64, n=1, seed=123, steps=2)[0].png
    again = generator.generate("a lighthouse", 64, 64, n=1, seed=123, steps=2)[0].png
    other = generator.generate("a lighthouse", 64, 64, n=1, seed=124, steps=2)[0].png
    assert first == again
    assert first != other


def test_each_image_is_made_again_from_its_reported_seed(generator: ImageGenerator):
    batch = generator.generate("three boats", 64, 64, n=3, seed=MAX_SEED - 1, steps=2)
    assert [i.seed for i in batch] == [MAX_SEED - 1, MAX_SEED, 0]
    alone = generator.generate("three boats", 64, 64, n=1, seed=batch[2].seed, steps=2)[0]
    assert alone.png == batch[2].png


@pytest.mark.parametrize(
    ("kwargs", "param", "code"),
    [
        ({"width": 60}, "size", "invalid_size"),
        ({"width": 56}, "size", "invalid_size"),
        ({"height": 1032}, "size", "invalid_size"),
        ({"n": 0}, "n", "invalid_n"),
        ({"n": 5}, "n", "invalid_n"),
        ({"steps": 0}, "steps", "invalid_steps"),
        ({"seed": -1}, "seed", "invalid_seed"),
        ({"seed": MAX_SEED + 1}, "seed", "invalid_seed"),
        ({"prompt": "  "}, "prompt", "empty_prompt"),
        ({"prompt": "word " * 100}, "prompt", "context_length_exceeded"),
    ],
)
def test_bad_requests_are_refused_before_any_work(generator: ImageGenerator, kwargs: dict, param: str, code: str):
    request = {"prompt": "a cat", "width": 64, "height": 64, "n": 1, "seed": 1, "steps": 2} | kwargs
    with pytest.raises(ImageRequestError) as raised:
        generator.generate(**request)
    assert (raised.value.param, raised.value.code) == (param, code)


def test_the_prompt_limit_is_the_tokenizers(generator: ImageGenerator):
    assert generator.max_prompt_tokens == 77
    assert generator.count_prompt_tokens("ab") == 4  # start, two single-byte tokens (no merges), end


def test_max_side_bounds_the_size(generator: ImageGenerator):
    with pytest.raises(ImageRequestError, match="from 64 to 128"):
        generator.generate("a cat", 136, 64, steps=1, max_side=128)
    assert generator.generate("a cat", 128, 64, steps=1, max_side=128)[0].width == 128


def test_a_cancelled_generation_returns_no_image(generator: ImageGenerator):
    stop = threading.Event()
    stop.set()
    with pytest.raises(GenerationCancelled):
        generator.generate("a cat", 64, 64, n=2, steps=2, cancelled=stop.is_set)


@pytest.mark.parametrize(
    ("text", "expected"), [("512x512", (512, 512)), ("64X1024", (64, 1024)), (" 256x128 ", (256, 128))]
)
def test_parse_size(text: str, expected: tuple[int, int]):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["512", "512x", "x512", "-64x64", "64x64x64", "1e3x64", "99999999x64", "512x512 px"])
def test_parse_size_refuses_what_is_not_a_size(text: str):
    with pytest.raises(ImageRequestError):
        parse_size(text)


def test_image_seed_wraps_at_the_largest_seed():
    assert image_seed(5, 2) == 7 and image_seed(MAX_SEED, 1) == 0


def test_sources_that_are_no_pipeline_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="not s3:// nor an existing directory"):
        resolve_source(str(tmp_path / "absent"))
    with pytest.raises(ValueError, match=r"no model_index\.json"):
        resolve_source(str(tmp_path))
    (tmp_path / "model_index.json").write_text("{}")
    assert resolve_source(f"file://{tmp_path}") == tmp_path
