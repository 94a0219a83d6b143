"""A tiny Stable Diffusion-style pipeline with random weights, for tests and local demos (no download).

`python -m gpt_model.images_tiny OUTDIR` writes it with `save_pretrained`: a small UNet2DConditionModel, an
AutoencoderKL that downsamples by 8 like Stable Diffusion's, a CLIPTextModel and a byte-level CLIPTokenizer whose
vocabulary (and empty merge list) is written here, and a DDIM scheduler. The images are noise, but every step of
the real loading and inference code runs: a 64x64 image in 2 steps takes well under a second on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

TOKENIZER_MAX_LENGTH = 77  # Stable Diffusion's CLIP context
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


def _bytes_to_unicode() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the 256 byte values (GPT-2's table)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer(directory: Path) -> int:
    """A CLIP tokenizer over single bytes (each byte alone and word-final), no merges; returns the vocab size."""
    directory.mkdir(parents=True, exist_ok=True)
    tokens = _bytes_to_unicode()
    vocab_list = tokens + [t + "</w>" for t in tokens] + list(SPECIAL_TOKENS)
    vocab = {token: index for index, token in enumerate(vocab_list)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": TOKENIZER_MAX_LENGTH,
                "bos_token": SPECIAL_TOKENS[0],
                "eos_token": SPECIAL_TOKENS[1],
                "unk_token": SPECIAL_TOKENS[1],
                "pad_token": SPECIAL_TOKENS[1],
                "do_lower_case": True,
            }
        )
    )
    return len(vocab)


def build_tiny_pipeline(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write a tiny random StableDiffusionPipeline to `out_dir` (diffusers' layout); return the directory."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".tokenizer-staging"
    vocab_size = write_tokenizer(staging)
    tokenizer = CLIPTokenizer.from_pretrained(str(staging))
    cross_attention_dim = 32
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 16, 16),  # four blocks: latents are 1/8 of the image per side, as in SD
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=cross_attention_dim,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TOKENIZER_MAX_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # diffusers' top-level names are typed as its dummy placeholder classes, which lack DiffusionPipeline's methods
    pipeline.save_pretrained(str(out), safe_serialization=True)  # type: ignore[attr-defined]
    for leftover in staging.iterdir():
        leftover.unlink()
    staging.rmdir()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="where to write the pipeline (created)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    print(build_tiny_pipeline(args.out_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
