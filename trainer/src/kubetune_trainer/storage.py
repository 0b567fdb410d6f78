"""Object storage behind one small interface: S3 (boto3) and local paths.

`file://` and `pvc://` URIs are directories on a mounted filesystem; `s3://`
goes through boto3 with the endpoint from the config or `AWS_ENDPOINT_URL`
(MinIO, Ceph...). Every call is retried with exponential backoff on transient
errors (connection refused/reset, timeouts, 5xx, throttling) until a deadline,
so a store that disappears for a while delays uploads instead of failing them.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

log = logging.getLogger("kubetune.storage")
T = TypeVar("T")

PVC_ROOT_ENV = "KUBETUNE_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"


def pvc_path(uri: str) -> Path:
    """pvc://claim/sub/path → <KUBETUNE_PVC_ROOT>/claim/sub/path (the operator mounts claims there)."""
    rest = uri[len("pvc://"):]
    return Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT)) / rest


def local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    if uri.startswith("pvc://"):
        return pvc_path(uri)
    raise ValueError(f"not a local URI: {uri}")


def split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://"):]
    bucket, _, key = rest.partition("/")
    return bucket, key


def join(uri: str, *parts: str) -> str:
    out = uri.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


@dataclass
class ObjectInfo:
    key: str  # relative to the listed prefix
    size: int


def _is_transient(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import (BotoCoreError, ClientError, ConnectionError as BotoConnectionError,
                                         EndpointConnectionError, ReadTimeoutError, ConnectTimeoutError)
    except ImportError:  # pragma: no cover
        return isinstance(exc, (ConnectionError, TimeoutError))
    if isinstance(exc, (EndpointConnectionError, BotoConnectionError, ReadTimeoutError, ConnectTimeoutError,
                        ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or code in {"SlowDown", "Throttling", "RequestTimeout", "ServiceUnavailable", "InternalError"}
    return isinstance(exc, BotoCoreError)


def retry(fn: Callable[[], T], *, what: str, deadline_s: float = 60.0, base_s: float = 0.5, max_s: float = 8.0,
          on_retry: Callable[[], None] | None = None) -> T:
    """Call fn until it succeeds, a non-transient error occurs, or deadline_s passes;
    `on_retry` is told of each failed attempt that will be retried."""
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - classified below
            attempt += 1
            elapsed = time.monotonic() - start
            if not _is_transient(exc) or elapsed >= deadline_s:
                raise
            delay = min(max_s, base_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            delay = min(delay, max(0.0, deadline_s - elapsed))
            log.warning("%s failed (%s: %s); retry %d in %.1fs", what, type(exc).__name__, str(exc).splitlines()[0][:200], attempt, delay)
            if on_retry:
                on_retry()
            time.sleep(delay)


class Store:
    """One storage root (a URI prefix). Keys are '/'-separated and relative to it."""

    def __init__(self, uri: str, *, endpoint: str | None = None, region: str | None = None, deadline_s: float = 60.0):
        self.uri = uri.rstrip("/")
        self.deadline_s = deadline_s
        if self.uri.startswith("s3://"):
            self._s3 = S3Backend(self.uri, endpoint=endpoint, region=region)
            self._local = None
        else:
            self._s3 = None
            self._local = local_path(self.uri)

    def child(self, *parts: str) -> "Store":
        s = Store.__new__(Store)
        s.uri, s.deadline_s = join(self.uri, *parts), self.deadline_s
        s._s3 = self._s3.child(*parts) if self._s3 else None
        s._local = self._local.joinpath(*parts) if self._local is not None else None
        return s

    def with_deadline(self, deadline_s: float) -> "Store":
        """The same store, giving up on an unreachable endpoint after deadline_s."""
        s = self.child()
        s.deadline_s = deadline_s
        return s

    def _retry(self, fn, what, deadline_s=None, on_retry=None):
        return retry(fn, what=f"{what} {self.uri}", deadline_s=self.deadline_s if deadline_s is None else deadline_s, on_retry=on_retry)

    # -- operations ---------------------------------------------------------------------
    def put_file(self, key: str, src: Path, deadline_s: float | None = None, on_retry=None) -> None:
        if self._s3:
            self._retry(lambda: self._s3.put_file(key, src), f"upload {key} to", deadline_s, on_retry)
        else:
            dst = self._local / key
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".part")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)  # atomic: readers never see half a file

    def put_bytes(self, key: str, data: bytes, deadline_s: float | None = None, on_retry=None) -> None:
        if self._s3:
            self._retry(lambda: self._s3.put_bytes(key, data), f"write {key} to", deadline_s, on_retry)
        else:
            dst = self._local / key
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, dst)

    def get_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None if it does not exist."""
        if self._s3:
            return self._retry(lambda: self._s3.get_bytes(key), f"read {key} from")
        p = self._local / key
        return p.read_bytes() if p.is_file() else None

    def get_file(self, key: str, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if self._s3:
            self._retry(lambda: self._s3.get_file(key, dst), f"download {key} from")
        else:
            shutil.copyfile(self._local / key, dst)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under prefix (recursive), keys relative to this store."""
        if self._s3:
            return self._retry(lambda: list(self._s3.list(prefix)), "list")
        root = self._local / prefix if prefix else self._local
        if not root.exists():
            return []
        if root.is_file():
            return [ObjectInfo(prefix, root.stat().st_size)]
        return sorted(
            (ObjectInfo(str(p.relative_to(self._local)), p.stat().st_size) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".part")),
            key=lambda o: o.key,
        )

    def list_dirs(self) -> list[str]:
        """Immediate child 'directories' (common prefixes)."""
        if self._s3:
            return self._retry(lambda: self._s3.list_dirs(), "list")
        if not self._local.is_dir():
            return []
        return sorted(p.name for p in self._local.iterdir() if p.is_dir())

    def delete_prefix(self, prefix: str) -> None:
        if self._s3:
            self._retry(lambda: self._s3.delete_prefix(prefix), f"delete {prefix} in")
        else:
            shutil.rmtree(self._local / prefix, ignore_errors=True)

    def delete(self, key: str) -> None:
        if self._s3:
            self._retry(lambda: self._s3.delete_prefix(key, exact=True), f"delete {key} in")
        else:
            (self._local / key).unlink(missing_ok=True)

    def is_file(self) -> bool:
        """Whether the root itself is one object (a single-file dataset/model URI)."""
        if self._s3:
            return self._retry(lambda: self._s3.is_object(), "stat")
        return self._local.is_file()


class S3Backend:
    def __init__(self, uri: str, *, endpoint: str | None, region: str | None, _client=None):
        import boto3
        from botocore.config import Config

        self.bucket, self.prefix = split_s3(uri)
        self.prefix = self.prefix.strip("/")
        if _client is None:
            endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL") or None
            region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            # Our own retry loop handles long outages; botocore's only the blips.
            # Short connect timeouts so a dead endpoint is noticed quickly.
            config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=60,
                            s3={"addressing_style": "path"} if endpoint else {})
            _client = boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)
        self.client = _client

    def child(self, *parts: str) -> "S3Backend":
        b = S3Backend.__new__(S3Backend)
        b.bucket, b.client = self.bucket, self.client
        b.prefix = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return b

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix and key else (self.prefix or key)

    def put_file(self, key: str, src: Path) -> None:
        from boto3.s3.transfer import TransferConfig

        # Multipart above 64 MiB; boto3 handles the parts and their retries.
        self.client.upload_file(str(src), self.bucket, self._key(key), Config=TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def get_file(self, key: str, dst: Path) -> None:
        tmp = dst.with_name(dst.name + ".part")
        self.client.download_file(self.bucket, self._key(key), str(tmp))
        os.replace(tmp, dst)

    def _pages(self, prefix: str, delimiter: str | None = None) -> Iterator[dict]:
        kwargs = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        yield from self.client.get_paginator("list_objects_v2").paginate(**kwargs)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full = self._key(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        full_dir = full + "/" if full and not full.endswith("/") else full
        for page in self._pages(full_dir):
            for obj in page.get("Contents", []):
                yield ObjectInfo(obj["Key"][len(base):], obj["Size"])

    def list_dirs(self) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        out = []
        for page in self._pages(base, "/"):
            out += [cp["Prefix"][len(base):].rstrip("/") for cp in page.get("CommonPrefixes", [])]
        return sorted(out)

    def delete_prefix(self, prefix: str, exact: bool = False) -> None:
        keys = [self._key(prefix)] if exact else [self._key(o.key) for o in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            chunk = keys[i:i + 1000]
            if chunk:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})

    def is_object(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix)
            return True
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (403, 404):
                return False
            raise


def open_store(uri: str, s3_endpoint: str | None = None, s3_region: str | None = None, deadline_s: float = 60.0) -> Store:
    return Store(uri, endpoint=s3_endpoint, region=s3_region, deadline_s=deadline_s)


class UnsafeKey(ValueError):
    """A stored object's name that would land outside the directory it is downloaded into."""


def inside(root: Path, rel: str) -> Path:
    """`root / rel`, refused when an object's name (a store's key, a manifest's
    path) would put it outside `root`: absolute, with `..`, or through a link.
    Object names come from storage other runs and tenants may write."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or rel.startswith("/") or ".." in parts:
        raise UnsafeKey(f"refusing to download {rel!r}: it would land outside {root}")
    target = root / rel
    if not target.resolve().is_relative_to(root.resolve()):
        raise UnsafeKey(f"refusing to download {rel!r}: it resolves outside {root}")
    return target


def put_tree(store: Store, src: Path, key: str) -> str:
    """Upload a file, or every file under a directory, as `key`; returns its URI."""
    if src.is_file():
        store.put_file(key, src)
    else:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                store.put_file(f"{key}/{p.relative_to(src)}", p)
    return join(store.uri, key)


def fetch(uri: str, dst_dir: Path, *, s3_endpoint=None, s3_region=None) -> Path:
    """Download an s3:// object or prefix into dst_dir; returns the local file or dir."""
    store = open_store(uri, s3_endpoint, s3_region)
    if store.is_file():
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        target = dst_dir / name
        if not target.exists():
            _get_whole(store, target)
        return target
    for obj in store.list():
        target = inside(dst_dir, obj.key)
        if not (target.exists() and target.stat().st_size == obj.size):
            store.get_file(obj.key, target)
    return dst_dir


def _get_whole(store: Store, target: Path) -> None:
    # A single-object URI: its own key is the store prefix.
    target.parent.mkdir(parents=True, exist_ok=True)
    if store._s3:
        b = store._s3
        store._retry(lambda: b.client.download_file(b.bucket, b.prefix, str(target)), "download")
    else:
        shutil.copyfile(store._local, target)
