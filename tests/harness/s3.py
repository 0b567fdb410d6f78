"""MinIO helpers: a boto3 client for the harness's S3 endpoint, buckets made
and removed per test."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def s3_client(endpoint: str, access_key: str, secret_key: str) -> Any:
    """A boto3 S3 client for MinIO (path-style addressing, region us-east-1)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def create_bucket(client: Any, name: str) -> None:
    client.create_bucket(Bucket=name)


def delete_bucket(client: Any, name: str) -> None:
    """Remove a bucket with everything in it (objects and unfinished multipart uploads)."""
    from botocore.exceptions import ClientError

    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for up in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=name)
    except ClientError as e:
        if e.response["Error"]["Code"] != "NoSuchBucket":
            raise


@dataclass(frozen=True)
class S3Bucket:
    """One bucket on the harness's MinIO, with what a client or a pod needs."""

    name: str
    client: Any  # boto3 S3 client
    endpoint: str
    access_key: str
    secret_key: str

    def uri(self, key: str = "") -> str:
        """``s3://<bucket>/<key>``"""
        return f"s3://{self.name}/{key.lstrip('/')}"

    def env(self) -> dict[str, str]:
        """AWS_* variables that point boto3 (in a subprocess or pod) here."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": "us-east-1"}

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out
