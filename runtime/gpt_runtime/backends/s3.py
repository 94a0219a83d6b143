"""User files on S3 (or any S3-compatible server): s3://bucket/prefix?region=REGION&endpoint_url=URL.

Objects are ``<prefix>/<owner>/<id>`` with the sniffed Content-Type and the rest of the metadata in
``x-amz-meta-*`` headers, so one GetObject returns bytes and metadata together. The bucket must exist
(it is infrastructure: versioning, lifecycle and encryption are set where it is created).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from gpt_runtime.backends.files import FileMeta, is_file_id, new_meta, owner_key


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _meta(owner: str, file_id: str, response: dict[str, Any]) -> FileMeta | None:
    """FileMeta from a GetObject/HeadObject answer; None when the object is not this owner's."""
    metadata = response.get("Metadata", {})
    if unquote(metadata.get("owner", "")) != owner:  # keys are per owner; this also guards digested owner keys
        return None
    filename = metadata.get("filename")
    return FileMeta(
        id=file_id,
        owner=owner,
        content_type=response.get("ContentType", "application/octet-stream"),
        size=int(response.get("ContentLength", 0)),
        sha256=metadata.get("sha256", ""),
        filename=unquote(filename) if filename is not None else None,
        conversation_id=metadata.get("conversation-id"),
        created_at=int(metadata.get("created-at", "0")),
    )


class S3FileStore:
    """FileStore on one bucket and key prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, region: str | None = None, endpoint_url: str | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.endpoint_url = endpoint_url
        self._client: Any = None

    @classmethod
    def from_url(cls, url: str) -> S3FileStore:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"files URL must be s3://bucket/prefix, got {url!r}")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"region", "endpoint_url"}
        if unknown:
            raise ValueError(f"unknown s3 URL options: {', '.join(sorted(unknown))}")
        return cls(parts.netloc, parts.path, region=query.get("region"), endpoint_url=query.get("endpoint_url"))

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("file store is not open")
        return self._client

    def _key(self, owner: str, file_id: str) -> str:
        key = f"{owner_key(owner)}/{file_id}"
        return f"{self.prefix}/{key}" if self.prefix else key

    async def open(self) -> None:
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=30)
        self._client = boto3.session.Session().client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config
        )
        try:
            await asyncio.to_thread(self._client.head_bucket, Bucket=self.bucket)
        except ClientError as exc:
            raise RuntimeError(f"S3 bucket {self.bucket!r} is not reachable: {_code(exc) or exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None

    async def ping(self) -> bool:
        try:
            await asyncio.to_thread(self.client.head_bucket, Bucket=self.bucket)
            return True
        except Exception:
            return False

    async def put(
        self,
        data: bytes,
        content_type: str,
        owner: str,
        *,
        filename: str | None = None,
        conversation_id: str | None = None,
    ) -> str:
        meta = new_meta(data, content_type, owner, filename, conversation_id)
        metadata = {
            "owner": quote(owner, safe=""),
            "sha256": meta.sha256,
            "created-at": str(meta.created_at),
        }
        if filename is not None:
            metadata["filename"] = quote(filename, safe="")  # S3 metadata is ASCII only
        if conversation_id is not None:
            metadata["conversation-id"] = conversation_id
        await asyncio.to_thread(
            self.client.put_object,
            Bucket=self.bucket,
            Key=self._key(owner, meta.id),
            Body=data,
            ContentType=content_type,
            Metadata=metadata,
        )
        return meta.id

    async def get(self, owner: str, file_id: str) -> tuple[bytes, FileMeta] | None:
        if not is_file_id(file_id):
            return None

        def fetch() -> tuple[bytes, FileMeta] | None:
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(owner, file_id))
            except ClientError as exc:
                if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            with response["Body"] as body:
                data = body.read()
            meta = _meta(owner, file_id, response)
            return (data, meta) if meta else None

        return await asyncio.to_thread(fetch)

    def _head(self, owner: str, file_id: str) -> FileMeta | None:
        try:
            response = self.client.head_object(Bucket=self.bucket, Key=self._key(owner, file_id))
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return _meta(owner, file_id, response)

    async def stat(self, owner: str, file_id: str) -> FileMeta | None:
        if not is_file_id(file_id):
            return None
        return await asyncio.to_thread(self._head, owner, file_id)

    async def delete(self, owner: str, file_id: str) -> bool:
        if not is_file_id(file_id):
            return False

        def remove() -> bool:
            if self._head(owner, file_id) is None:
                return False
            self.client.delete_object(Bucket=self.bucket, Key=self._key(owner, file_id))
            return True

        return await asyncio.to_thread(remove)
