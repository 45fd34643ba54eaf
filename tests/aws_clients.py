"""boto3 clients of a test server's Rekognition door, and reading their errors (shared by the tests
of the Rekognition door)."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError


def rekognition(url: str, key: str | None, secret: str | None, **config: object):
    config.setdefault("retries", {"max_attempts": 1, "mode": "standard"})
    cfg = Config(max_pool_connections=64, **config)  # type: ignore[arg-type]
    return boto3.client("rekognition", endpoint_url=url, region_name="eu-west-1",
                        aws_access_key_id=key, aws_secret_access_key=secret, config=cfg)


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return exc.value.response["Error"]["Code"]
