"""The trainer: the loss falls, checkpoints load, and resume continues exactly where it stopped."""

import json
import os
import subprocess
import sys

import pytest
import torch
from gpt_model.checkpoint import load_checkpoint
from gpt_model.train import train

pytestmark = pytest.mark.unit

TEXT = "the cat sat on the mat . a dog ran to the park . birds sing in the morning light ."
WORDS = TEXT.split(" ")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    sentences = []
    for _ in range(400):
        start = int(torch.randint(0, len(WORDS) - 6, (1,), generator=gen))
        sentences.append(" ".join(WORDS[start : start + 6]))
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text("\n".join(sentences), encoding="utf-8")
    return path


def _args(corpus, out, *extra):
    return [
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--preset",
        "tiny",
        "--vocab-size",
        "300",
        "--block-size",
        "32",
        "--batch-size",
        "8",
        "--lr",
        "5e-3",
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]


def test_a_few_steps_make_the_loss_fall_and_save_a_loadable_checkpoint(corpus, tmp_path):
    result = train(_args(corpus, tmp_path / "run", "--steps", "40", "--save-every", "0"))
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < first - 1.0, (first, last)
    loaded = load_checkpoint(tmp_path / "run")
    assert loaded.config is not None and loaded.config.n_layer == 2
    ids = torch.tensor([loaded.tokenizer.encode("the cat sat on the")])
    with torch.no_grad():
        _, loss = loaded.model(ids[:, :-1], ids[:, 1:])
    assert loss.item() < first  # the saved weights are the trained ones


def test_resume_continues_exactly_where_it_stopped(corpus, tmp_path):
    straight = train(_args(corpus, tmp_path / "a", "--steps", "12", "--save-every", "0"))
    train(_args(corpus, tmp_path / "b", "--steps", "12", "--stop-after", "7", "--save-every", "0"))
    assert json.loads((tmp_path / "b" / "config.json").read_text())["model_type"] == "llama"
    # the second half runs as the command-line tool would
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "gpt_model.train", *_args(corpus, tmp_path / "b", "--steps", "12", "--resume")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["step"] == 12
    assert "steps 7->12" in proc.stderr
    a = load_checkpoint(tmp_path / "a").model.state_dict()
    b = load_checkpoint(tmp_path / "b").model.state_dict()
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, rtol=1e-5, atol=1e-6)
    assert straight.step == 12
