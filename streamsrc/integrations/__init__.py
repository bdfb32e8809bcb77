"""AWS integrations: DynamoDB Streams and Kinesis sources, a Kinesis sink, a Lambda handler adapter.

* :mod:`streamsrc.integrations.dynamodb_streams` — the events written to a
  DynamoDB events table, read from the table's stream (shards in lineage order).
* :mod:`streamsrc.integrations.kinesis` — publish recorded events to a Kinesis
  data stream (``put_records`` in batches, retrying only failed records) and
  read them back from per-shard checkpoints.
* :mod:`streamsrc.integrations.aws_lambda` — run a projection, a pipe or an
  async handler as an AWS Lambda function fed by DynamoDB Streams or Kinesis,
  with partial batch failures.

They run on **aiobotocore** (the ``aws`` extra), which runs on asyncio only:
the sources and the sink fail with a clear error on trio. Nothing in the
streaming core or the stores imports this package.
"""
