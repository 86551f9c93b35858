"""`segflow generate --profiles` against the embedded broker: what lands in profile/events is
valid, keyed and partitioned by the identity shuffle (anonymousId, else userId) so each
device's events keep their order, and the same as `--stdout` gives for the seed.
(test_profile_ingest.py counts what a run sends; this checks each record.)"""

from __future__ import annotations

import orjson
import pytest

from pipeline.documents.validation import Validator
from pipeline.runtime.produce import PRODUCER
from pipeline.runtime.topics import partition_for
from tests.fixtures.stack import Namespace
from tests.integration.test_ingest_generate import records, segflow

pytestmark = pytest.mark.integration

EVENTS = "profile/events"
ARGS = ("generate", "--profiles", "--count", "2000", "--seed", "1", "--rate", "0")


async def test_generated_product_events_land_valid_and_keyed(namespace: Namespace) -> None:
    result = segflow(*ARGS, env=namespace.env())  # no --collection: profile/events
    assert result.returncode == 0, result.stderr
    got = await records(namespace, EVENTS)
    assert len(got) == 2000
    spec = namespace.catalog.collections[EVENTS]
    validator = Validator(spec.schema)
    (identity,) = namespace.catalog.derivations_from(EVENTS)
    key_of = identity.shuffle_encoder()
    for record in got:
        doc = orjson.loads(record.value)
        assert validator.errors(doc) == [], doc
        assert record.key == key_of(doc)
        assert record.key == orjson.dumps([doc.get("anonymousId", doc.get("userId"))])
        assert record.partition == partition_for(record.key, spec.partitions)
        assert dict(record.headers)[PRODUCER] == b"segflow-generate"
    assert len({r.partition for r in got}) == spec.partitions  # spread, not one partition

    printed = segflow(*ARGS, "--stdout", env=namespace.env())
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.encode().splitlines()
    assert sorted(lines) == sorted(r.value for r in got)  # the seed's events, byte for byte
