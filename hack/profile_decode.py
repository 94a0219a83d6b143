"""Where a decode step's time goes: matmuls, attention, KV cache writes, other kernels, Python and
dispatch, sampling and detokenizing, on SmolLM2-135M at 1 and 32 streams.

One decode step is the runner's forward for every running sequence (one new token each, after a
40-token prompt), then greedy sampling of the logits, then detokenizing the new tokens. The step's
wall time is the median over --steps steps without the profiler; the kernel shares come from
torch.profiler's self CPU times over the same number of steps, scaled to that wall time (the
profiler's own cost inflates every kernel alike). "python + dispatch" is the forward's wall time
that no kernel accounts for.

    .venv/bin/python hack/profile_decode.py                        # this checkout
    .venv/bin/python hack/profile_decode.py --small-batch-dtype float16 --small-batch-rows 4 --packed-weights
    .venv/bin/python hack/profile_decode.py --quantize int8
    .venv/bin/python hack/profile_decode.py --model-dir /tmp/old/model   # another checkout's model/ (before)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

CATEGORIES = (
    ("matmul", ("mm", "linear", "matmul", "addmm", "bmm")),
    ("int8 input", ("quantize", "choose_qparams", "dequantize")),
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention")),
    ("kv cache", ("index_copy", "index_select", "index_put")),
)


def category(op: str) -> str:
    """The share an aten op's time counts towards."""
    name = op.removeprefix("aten::").lower()
    for label, keys in CATEGORIES:
        if any(k in name for k in keys):
            return label
    return "other kernels"


def runner_class():
    try:
        from gpt_model.runners import GPTRunner
    except ImportError:  # before the engine split
        from gpt_model.engine import GPTRunner
    return GPTRunner


def profile(model, tokenizer, streams: int, steps: int) -> dict:
    import torch
    from gpt_model.protocol import SamplingParams
    from gpt_model.sampling import sample_rows
    from gpt_model.tokenizer import StreamDecoder

    runner = runner_class()(model, 32, 2048, 1 << 30)
    runner.reserve(streams, 256)
    prompt = tokenizer.encode("Write a short story about a robot learning to paint, in the style of a fairy tale.")
    prompt = (prompt * 8)[:40]
    for slot in range(streams):
        runner.prefill(slot, prompt)
    params = [SamplingParams(temperature=0.0, max_tokens=64)] * streams
    decoders = [StreamDecoder(tokenizer) for _ in range(streams)]
    tokens, position = [prompt[-1]] * streams, len(prompt)

    def step(timings: dict | None) -> None:
        nonlocal tokens, position
        t0 = time.perf_counter()
        logits = runner.decode(tokens, [position] * streams)
        t1 = time.perf_counter()
        picked = sample_rows(logits, params, [None] * streams).tolist()
        t2 = time.perf_counter()
        for d, t in zip(decoders, picked, strict=True):
            d.push(t)
        t3 = time.perf_counter()
        tokens, position = picked, position + 1
        if timings is not None:
            timings["forward"].append(t1 - t0)
            timings["sampling"].append(t2 - t1)
            timings["detokenizing"].append(t3 - t2)

    for _ in range(3):
        step(None)
    timings: dict[str, list[float]] = defaultdict(list)
    for _ in range(steps):
        step(timings)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            runner.decode(tokens, [position] * streams)
    kernels: dict[str, float] = defaultdict(float)
    for evt in prof.key_averages():
        kernels[category(evt.key)] += evt.self_cpu_time_total / 1e6 / steps
    forward = statistics.median(timings["forward"])
    profiled = sum(kernels.values())
    # kernels scaled so that kernels + python never exceed the measured forward
    scale = min(1.0, forward / profiled) if profiled else 1.0
    shares = {k: v * scale for k, v in kernels.items()}
    shares["python + dispatch"] = max(0.0, forward - sum(shares.values()))
    shares["sampling"] = statistics.median(timings["sampling"])
    shares["detokenizing"] = statistics.median(timings["detokenizing"])
    total = sum(shares.values())
    return {
        "streams": streams,
        "step_ms": total * 1e3,
        "tokens_per_s": streams / total,
        "ms": {k: v * 1e3 for k, v in shares.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="1,32")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    ap.add_argument("--small-batch-dtype", default="", help="float16 or bfloat16: a half copy for small batches")
    ap.add_argument("--small-batch-rows", type=int, default=4)
    ap.add_argument("--packed-weights", action="store_true", help="oneDNN-packed weights for larger steps")
    ap.add_argument("--quantize", default="", help="int8: int8 weights (gpt_model.quantize)")
    ap.add_argument("--model-dir", default=str(ROOT / "model"), help="the model/ directory to import gpt_model from")
    ap.add_argument("--label", default="", help="a name for this run in the table")
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    sys.path.insert(0, args.model_dir)
    import torch

    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    from gpt_model.checkpoint import load_source, smollm2_dir

    loaded = load_source(str(smollm2_dir()), dtype="float32", device="cpu")
    if args.small_batch_dtype:
        loaded.model.use_small_batch_weights(getattr(torch, args.small_batch_dtype), args.small_batch_rows)
    if args.packed_weights:
        loaded.model.use_packed_weights(32)
    if args.quantize == "int8":
        from gpt_model.quantize import calibration_prompts, quantize_int8

        quantize_int8(loaded.model, calibration_prompts(loaded.tokenizer))
    rows = [profile(loaded.model, loaded.tokenizer, int(s), args.steps) for s in args.streams.split(",")]
    label = (
        args.label
        or f"{Path(args.model_dir).resolve()}{' ' + args.small_batch_dtype if args.small_batch_dtype else ''}"
        f"{' ' + args.quantize if args.quantize else ''}"
    )
    names = list(rows[0]["ms"])
    print(f"decode step, SmolLM2-135M float32, {torch.get_num_threads()} threads: {label}")
    print(f"{'ms per step':18}" + "".join(f"{r['streams']:>10} st" for r in rows))
    for name in names:
        print(f"{name:18}" + "".join(f"{r['ms'][name]:9.1f} {100 * r['ms'][name] / r['step_ms']:2.0f}%" for r in rows))
    print(f"{'step':18}" + "".join(f"{r['step_ms']:13.1f}" for r in rows))
    print(f"{'tokens/s':18}" + "".join(f"{r['tokens_per_s']:13.1f}" for r in rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"label": label, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
