"""What half-precision weight copies and int8 weights cost in quality: a small eval on SmolLM2-135M.

The engine can keep a float16 or bfloat16 copy of every matmul weight for decode steps over few
sequences (`GPT.use_small_batch_weights`, the engine option `small_batch_dtype`): those steps read
half the bytes, so they run up to twice as fast on a CPU, while larger batches keep float32. This
script measures what that changes, on the decode path itself (one row per forward, a KV cache):

- perplexity of a fixed set of English paragraphs (below), teacher-forced token by token;
- greedy agreement: for each prompt, the first `--tokens` greedy tokens in float32 and with the
  half copy; how many continuations are identical, and where the others first differ;
- top-1 agreement of the teacher-forced next-token predictions.

    .venv/bin/python hack/eval_quality.py --dtypes float16,int8   # the float16 copy and int8 weights (last:
                                                                  # it replaces the float32 weights)
    .venv/bin/python hack/eval_quality.py                  # float16 and bfloat16 against float32
    .venv/bin/python hack/eval_quality.py --dtypes float16 --tokens 64

Prints a table; --json writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "model"))

import torch  # noqa: E402

PARAGRAPHS = [
    "The river rose slowly through the night, and by morning the lower fields were under water. Farmers moved "
    "their animals to the hills and waited for the rain to stop.",
    "A compiler translates a program written in one language into another, usually a lower-level one. Most "
    "compilers first parse the source into a tree, then check types, optimise, and emit machine code.",
    "Bread is made from flour, water, salt and yeast. The dough is kneaded, left to rise, shaped, and baked in a "
    "hot oven until the crust turns brown.",
    "The meeting was moved to Thursday because half of the team was travelling. Please send your notes by "
    "Wednesday evening so that everyone can read them in advance.",
    "Photosynthesis lets plants turn light, water and carbon dioxide into sugar and oxygen. It happens mostly in "
    "the leaves, inside small structures called chloroplasts.",
    "She opened the old letter carefully. The ink had faded, but she could still read her grandmother's words "
    "about the summer they spent by the sea.",
    "To reset your password, open the settings page, choose security, and follow the link we send to your email "
    "address. The link expires after one hour.",
    "The city council approved a new budget for public transport. More buses will run on weekends, and two new "
    "tram lines are planned for the next five years.",
]

PROMPTS = [
    "Write a short story about a robot learning to paint.",
    "Explain why the sky is blue.",
    "What is the capital of France?",
    "Give me three tips for learning a new language.",
    "Describe a trip to the moon.",
    "How do I make a cup of tea?",
    "What is a prime number?",
    "Tell me about the history of bread.",
]


@torch.inference_mode()
def teacher_forced(model, ids: list[int]) -> tuple[float, list[int]]:
    """Summed negative log-likelihood of ids[1:] and the argmax after each prefix, one token per forward."""
    from gpt_model.gpt import KVCache

    cache = KVCache()
    nll, argmax = 0.0, []
    for i in range(len(ids) - 1):
        logits = model(torch.tensor([[ids[i]]]), cache=cache)[0, -1].float()
        nll -= torch.log_softmax(logits, -1)[ids[i + 1]].item()
        argmax.append(int(logits.argmax()))
    return nll, argmax


@torch.inference_mode()
def greedy(model, ids: list[int], n: int) -> list[int]:
    """n greedy tokens after ids: the prompt in one forward (float32 rows), then one token per forward."""
    from gpt_model.gpt import KVCache

    cache = KVCache()
    logits = model(torch.tensor([ids]), cache=cache, last_only=True)[0, -1]
    out = []
    for _ in range(n):
        token = int(logits.argmax())
        out.append(token)
        logits = model(torch.tensor([[token]]), cache=cache)[0, -1]
    return out


def evaluate(model, tokenizer, tokens: int) -> dict:
    from gpt_model.protocol import ChatMessage

    started = time.perf_counter()
    nll, count, preds = 0.0, 0, []
    for text in PARAGRAPHS:
        ids = tokenizer.encode(text)
        s, argmax = teacher_forced(model, ids)
        nll, count = nll + s, count + len(ids) - 1
        preds.append(argmax)
    gens = [greedy(model, tokenizer.encode_chat([ChatMessage("user", p)]), tokens) for p in PROMPTS]
    return {
        "ppl": math.exp(nll / count),
        "tokens": count,
        "preds": preds,
        "gens": gens,
        "seconds": time.perf_counter() - started,
    }


def compare(base: dict, other: dict) -> dict:
    """Agreement of `other` with `base` (float32)."""
    same_top1 = sum(
        a == b for pa, pb in zip(base["preds"], other["preds"], strict=True) for a, b in zip(pa, pb, strict=True)
    )
    total = sum(len(p) for p in base["preds"])
    identical, first_diff = 0, []
    for a, b in zip(base["gens"], other["gens"], strict=True):
        if a == b:
            identical += 1
        else:
            first_diff.append(next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y))
    return {
        "top1_agreement": same_top1 / total,
        "identical_continuations": identical,
        "continuations": len(base["gens"]),
        "first_difference_at": sorted(first_diff),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float16,bfloat16", help="comma list: float16, bfloat16, int8")
    ap.add_argument("--tokens", type=int, default=32, help="greedy tokens per prompt")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from gpt_model.checkpoint import load_source, smollm2_dir

    loaded = load_source(str(smollm2_dir()), dtype="float32", device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    results = {"float32": evaluate(model, tokenizer, args.tokens)}
    names = [d for d in args.dtypes.split(",") if d]
    for name in [d for d in names if d != "int8"]:
        model.use_small_batch_weights(getattr(torch, name), rows=1)
        results[name] = evaluate(model, tokenizer, args.tokens)
        model.use_small_batch_weights(None, rows=0)
    if "int8" in names:  # last: it replaces the float32 weights
        from gpt_model.quantize import calibration_prompts, quantize_int8

        quantize_int8(model, calibration_prompts(tokenizer))
        results["int8"] = evaluate(model, tokenizer, args.tokens)
    base = results["float32"]
    print(
        f"SmolLM2-135M, {base['tokens']} teacher-forced tokens over {len(PARAGRAPHS)} paragraphs, "
        f"{len(PROMPTS)} prompts x {args.tokens} greedy tokens"
    )
    print(f"{'weights':10} {'perplexity':>10} {'ppl ratio':>9} {'top-1 agree':>11} {'same greedy':>11}  first diff at")
    rows = {}
    for name, r in results.items():
        c = compare(base, r)
        rows[name] = {"perplexity": r["ppl"], "seconds": r["seconds"], **c}
        print(
            f"{name:10} {r['ppl']:10.3f} {r['ppl'] / base['ppl']:9.4f} {c['top1_agreement']:11.1%} "
            f"{c['identical_continuations']:>5}/{c['continuations']:<5}  {c['first_difference_at'] or '-'}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
