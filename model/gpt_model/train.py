"""Train one of our presets on a text corpus.

    python -m gpt_model.train --data corpus.txt --out runs/tiny --preset tiny --steps 200
    python -m gpt_model.train --data corpus.txt --out runs/tiny --steps 400 --resume

A byte-level BPE is trained on the corpus first (or `--tokenizer bytes` / a tokenizer directory).
The output directory is a checkpoint in the Hugging Face layout (config.json, model.safetensors,
tokenizer files) that `load_checkpoint`, the engine and transformers all read, plus
trainer_state.pt (optimizer, step, random state) for --resume.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gpt_model.checkpoint import load_checkpoint, save_checkpoint, to_dtype
from gpt_model.config import PRESETS, preset
from gpt_model.gpt import GPT
from gpt_model.paths import offline
from gpt_model.tokenizer import ChatTokenizer, byte_level_tokenizer, load_tokenizer, train_bpe

STATE = "trainer_state.pt"


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # training loss per step run now
    val_loss: float | None = None
    tokens_per_s: float = 0.0
    out: Path | None = None


def read_corpus(path: str | os.PathLike) -> list[str]:
    p = Path(path)
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    texts = [f.read_text(encoding="utf-8") for f in files]
    if not any(t.strip() for t in texts):
        raise ValueError(f"no text in {path}")
    return texts


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gpt_model.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a .txt file or a directory of .txt files")
    ap.add_argument("--out", required=True, help="checkpoint directory")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--tokenizer", default="train", help="'train' (BPE on the corpus), 'bytes', or a directory")
    ap.add_argument("--vocab-size", type=int, default=2048)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200, help="total optimizer steps (including resumed ones)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=0, help="steps between validation losses (0: only at end)")
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--resume", action="store_true", help="continue from --out's trainer_state.pt")
    ap.add_argument("--stop-after", type=int, default=0, help="stop (and save) after this many steps in this run")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def _tokenizer(args, texts: list[str]) -> ChatTokenizer:
    out = Path(args.out)
    if args.resume and (out / "tokenizer.json").exists():
        return ChatTokenizer(load_tokenizer(out))
    if args.tokenizer == "bytes":
        return ChatTokenizer(byte_level_tokenizer())
    if args.tokenizer == "train":
        return ChatTokenizer(train_bpe(texts, vocab_size=args.vocab_size))
    return ChatTokenizer(load_tokenizer(args.tokenizer))


def _encode(tok: ChatTokenizer, texts: list[str]) -> torch.Tensor:
    eos = tok.hf.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tok.hf.get_vocab() else None
    ids: list[int] = []
    for t in texts:
        ids.extend(tok.encode(t))
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def _batch(data: torch.Tensor, block: int, batch: int, gen: torch.Generator, device) -> tuple:
    starts = torch.randint(0, len(data) - block - 1, (batch,), generator=gen)
    x = torch.stack([data[s : s + block] for s in starts.tolist()])
    y = torch.stack([data[s + 1 : s + 1 + block] for s in starts.tolist()])
    return x.to(device), y.to(device)


def _lr(step: int, args) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def _evaluate(model: GPT, data: torch.Tensor, args, device) -> float:
    model.eval()
    gen = torch.Generator().manual_seed(1234)
    losses = [model(*_batch(data, args.block_size, args.batch_size, gen, device))[1].item() for _ in range(4)]
    model.train()
    return sum(losses) / len(losses)


def train(argv: list[str] | None = None) -> TrainResult:
    args = build_parser().parse_args(argv)
    offline()
    out = Path(args.out)
    device = torch.device(args.device)
    texts = read_corpus(args.data)
    tok = _tokenizer(args, texts)
    data = _encode(tok, texts)
    split = max(int(len(data) * 0.9), len(data) - 100_000)
    train_data, val_data = data[:split], data[split:]
    if len(val_data) <= args.block_size + 1:
        val_data = train_data
    if len(train_data) <= args.block_size + 1:
        raise ValueError(f"corpus has {len(data)} tokens; need more than --block-size {args.block_size}")

    torch.manual_seed(args.seed)
    state = None
    if args.resume and (out / STATE).exists():
        loaded = load_checkpoint(out, dtype=args.dtype, device=device)
        model = loaded.model
        state = torch.load(out / STATE, map_location="cpu", weights_only=False)
    else:
        base = PRESETS[args.preset]
        config = preset(
            args.preset,
            vocab_size=tok.vocab_size,
            block_size=min(base.block_size, args.block_size),
            eos_token_id=tuple(sorted(tok.eos_token_ids)),
        )
        model = GPT(config).init_weights(args.seed).to(device=device, dtype=to_dtype(args.dtype))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(args.seed)
    step = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step = state["step"]

    def save(at_step: int) -> None:
        save_checkpoint(out, model, tok)
        tmp = out / (STATE + ".tmp")
        torch.save(
            {"optimizer": opt.state_dict(), "generator": gen.get_state(), "step": at_step, "args": vars(args)}, tmp
        )
        tmp.replace(out / STATE)

    result = TrainResult(step=step, out=out)
    n_params = model.num_parameters()
    print(
        f"gpt-model train: {args.preset} {n_params / 1e6:.2f}M params, {len(train_data)} train tokens, "
        f"vocab {tok.vocab_size}, steps {step}->{args.steps} on {device}",
        file=sys.stderr,
        flush=True,
    )
    from tqdm import tqdm

    bar = tqdm(total=args.steps, initial=step, disable=args.no_progress, desc="train", unit="step", file=sys.stderr)
    t0, tokens = time.perf_counter(), 0
    last = min(args.steps, step + args.stop_after) if args.stop_after else args.steps
    while step < last:
        for group in opt.param_groups:
            group["lr"] = _lr(step, args)
        x, y = _batch(train_data, args.block_size, args.batch_size, gen, device)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        step += 1
        tokens += x.numel()
        result.losses.append(loss.item())
        bar.set_postfix(loss=f"{result.losses[-1]:.3f}")
        bar.update(1)
        if args.eval_every and step % args.eval_every == 0:
            result.val_loss = _evaluate(model, val_data, args, device)
            bar.write(f"step {step}: val loss {result.val_loss:.4f}")
        if args.save_every and step % args.save_every == 0:
            save(step)
    bar.close()
    result.step = step
    result.tokens_per_s = tokens / max(time.perf_counter() - t0, 1e-9)
    result.val_loss = _evaluate(model, val_data, args, device)
    save(step)
    summary = {
        "step": step,
        "val_loss": round(result.val_loss, 4),
        "tokens_per_s": round(result.tokens_per_s),
        "out": str(out),
    }
    print(json.dumps(summary), flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    train(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
