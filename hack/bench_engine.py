"""Benchmark the engine against the naive baseline, on the same model in one run.

Baseline: one request at a time through transformers' `generate` (greedy, with a streamer for
timings). Engine: gpt_model's continuous-batching engine at 1, 8 and 32 concurrent streams.
Every request generates exactly --max-tokens tokens (end-of-turn tokens are ignored on both
sides), so tokens/s compare like with like.

    .venv/bin/python hack/bench_engine.py                       # SmolLM2-135M and the tiny preset, CPU
    .venv/bin/python hack/bench_engine.py --models tiny --streams 1,8
    .venv/bin/python hack/bench_engine.py --device cuda --json out.json

Each (model, mode) runs in its own subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
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
        "gpu_mb": row["gpu_mb"],
    }


def print_table(model: str, rows: list[dict], device: str) -> None:
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
    base = next(r for r in rows if r["mode"] == "baseline")
    ratios = ", ".join(
        f"{r['streams']} streams {r['tok_s'] / base['tok_s']:.1f}x" for r in rows if r["mode"] == "engine"
    )
    print(f"engine aggregate tokens/s vs baseline: {ratios}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--models", default="smollm2-135m,tiny", help="comma list: smollm2-135m, smollm2-arch, tiny, or a directory"
    )
    ap.add_argument("--streams", default="1,8,32")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1, help="batches of `streams` requests per engine setting")
    ap.add_argument("--baseline-requests", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-prefix-cache", action="store_true", help="engine without its prefix cache")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--tokenizer-dir", help="tokenizer for smollm2-arch (default: the converted SmolLM2)")
    ap.add_argument("--phase", choices=["baseline", "engine"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.streams = [int(s) for s in str(args.streams).split(",")]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    if args.phase:  # child process
        path = Path(args.path)
        out = run_baseline(path, args) if args.phase == "baseline" else run_engine(path, args)
        print("RESULT " + json.dumps(out))
        return 0

    all_results = {}
    cache = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    for name in args.models.split(","):
        path = model_dir(name, cache, args.tokenizer_dir)
        rows = []
        for phase in ("baseline", "engine"):
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
                raise SystemExit(f"{name} {phase} failed")
            data = json.loads(line.removeprefix("RESULT "))
            rows.extend(summarise(r) for r in (data if isinstance(data, list) else [data]))
        all_results[name] = rows
        print_table(name, rows, args.device)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"device": args.device, "dtype": args.dtype, "max_tokens": args.max_tokens, "results": all_results},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
