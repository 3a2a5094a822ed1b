"""S3 and Delta Lake storage options, built from the settings only here."""

from __future__ import annotations

from typing import Any

from plantstream.settings import Settings


def delta_storage_options(settings: Settings) -> dict[str, str]:
    """Storage options for ``deltalake`` (delta-rs) on S3.

    ``aws_conditional_put=etag`` lets concurrent writers commit safely without a
    DynamoDB lock (S3 conditional writes; SeaweedFS and AWS S3 both honour them).
    """
    s3 = settings.s3
    return {
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "AWS_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key.get_secret_value(),
        "AWS_ALLOW_HTTP": "true" if s3.allow_http else "false",
        "aws_conditional_put": "etag",
    }


def s3_env(settings: Settings) -> dict[str, str]:
    """Environment for tools that read AWS-style variables (Tansu, MLflow, boto3)."""
    s3 = settings.s3
    return {
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key.get_secret_value(),
        "AWS_REGION": s3.region,
        "AWS_DEFAULT_REGION": s3.region,
        "AWS_ENDPOINT": s3.endpoint_url,
        "AWS_ENDPOINT_URL": s3.endpoint_url,
        "AWS_ALLOW_HTTP": "true" if s3.allow_http else "false",
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url,
    }


def s3_client(settings: Settings, **overrides: Any):  # -> botocore S3 client
    import boto3
    from botocore.config import Config

    s3 = settings.s3
    return boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key.get_secret_value(),
        config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
        **overrides,
    )


def ensure_buckets(settings: Settings, buckets: list[str]) -> None:
    """Create buckets that do not exist yet (idempotent)."""
    client = s3_client(settings)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)
