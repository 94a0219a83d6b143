"""Checkpoints in S3: `s3://bucket/key` names a prefix holding config.json, *.safetensors and the
tokenizer files. Downloaded once into a local cache directory, and again when an object changes
(its ETag, recorded in `<dir>.etags.json` beside the mirror directory, or its size differs). An object key that
would land outside the cache directory (`../`, an absolute path) is refused.

The endpoint comes from boto3's usual configuration (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 for an
emulator such as moto, credentials from the environment or the pod's role).
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit


def parse_s3_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if bucket in (".", "..") or any(part in (".", "..") for part in prefix.split("/")):
        raise ValueError(f"s3 URL with a relative path segment: {url!r}")
    return bucket, prefix


def local_path(target: Path, rel: str) -> Path:
    """Where an object key (relative to the prefix) goes under `target`; refuses keys that escape it."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or any(p in ("..", ".") for p in parts) or "\\" in rel:
        raise ValueError(f"refusing S3 object key outside the cache directory: {rel!r}")
    dest = target.joinpath(*parts)
    if not dest.resolve().is_relative_to(target.resolve()):
        raise ValueError(f"refusing S3 object key outside the cache directory: {rel!r}")
    return dest


def _client():
    import boto3

    return boto3.client("s3")


def download_prefix(url: str, cache: str | os.PathLike) -> Path:
    """Mirror every object under the prefix into `cache/bucket/prefix/`; return that directory."""
    bucket, prefix = parse_s3_url(url)
    client = _client()
    target = Path(cache) / bucket / prefix
    base = prefix + "/" if prefix else ""
    etags_path = target.with_name(target.name + ".etags.json")
    try:
        etags: dict[str, str] = json.loads(etags_path.read_text())
    except (OSError, ValueError):
        etags = {}
    found = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(base) :]
            if not rel or rel.endswith("/"):
                continue
            found += 1
            dest = local_path(target, rel)
            etag = str(obj.get("ETag", ""))
            if dest.exists() and dest.stat().st_size == obj["Size"] and etags.get(rel) == etag:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            client.download_file(bucket, obj["Key"], str(tmp))
            tmp.replace(dest)
            etags[rel] = etag
            etags_path.write_text(json.dumps(etags, indent=1, sort_keys=True))
    if not found:
        raise FileNotFoundError(f"no objects under {url}")
    return target


def download_object(url: str, dest: str | os.PathLike) -> Path:
    """Download one object (`s3://bucket/key`) to `dest`, unless a file of the same size is there already."""
    bucket, key = parse_s3_url(url)
    if not key:
        raise ValueError(f"{url} names no object")
    client = _client()
    size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
    target = Path(dest)
    if target.exists() and target.stat().st_size == size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    client.download_file(bucket, key, str(tmp))
    tmp.replace(target)
    return target


def upload_dir(path: str | os.PathLike, url: str) -> list[str]:
    """Upload a checkpoint directory to `s3://bucket/prefix/` (flat files only); return the keys."""
    bucket, prefix = parse_s3_url(url)
    client = _client()
    keys = []
    for f in sorted(Path(path).iterdir()):
        if f.is_file():
            key = f"{prefix}/{f.name}" if prefix else f.name
            client.upload_file(str(f), bucket, key)
            keys.append(key)
    return keys
