"""The session's moto server answers DynamoDB, DynamoDB Streams and Kinesis calls on 127.0.0.1."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiobotocore runs on asyncio only


async def test_server_is_local_with_fake_credentials(moto_endpoint: str) -> None:
    from aiobotocore.session import get_session

    if not os.environ.get("STREAMSRC_TEST_AWS_ENDPOINT"):
        assert urlsplit(moto_endpoint).hostname == "127.0.0.1"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    session = get_session()
    async with session.create_client("dynamodb", endpoint_url=moto_endpoint) as dynamodb:
        tables = await dynamodb.list_tables()
        assert isinstance(tables["TableNames"], list)
    async with session.create_client("kinesis", endpoint_url=moto_endpoint) as kinesis:
        streams = await kinesis.list_streams()
        assert isinstance(streams["StreamNames"], list)
    async with session.create_client("dynamodbstreams", endpoint_url=moto_endpoint) as streams_client:
        listed = await streams_client.list_streams()
        assert isinstance(listed["Streams"], list)
