"""DHT records (meshp2p/wire/records.py): 10 000 hostile values per record kind only ever raise WireError."""

from __future__ import annotations

import cbor2
import pytest
from helpers.fuzz import FUZZ_EXAMPLES, fuzz, hostile_bytes, hostile_cbor
from helpers.wire import load_vectors
from hypothesis import strategies as st

from meshp2p.wire.identity import Identity, sign_object
from meshp2p.wire.records import RECORD_DOMAIN, decode_record, select_record

V = load_vectors("dht-records.json")


@pytest.mark.parametrize("case", V["valid"], ids=lambda c: c["kind"])
def test_decode_record_10k_hostile_values(case: dict[str, object]) -> None:
    value = bytes.fromhex(str(case["value"]))
    signer = Identity.from_seed(bytes.fromhex(V["seeds"][str(case["seed"])]))
    resign = lambda m: sign_object(signer, RECORD_DOMAIN, m)  # noqa: E731
    hostile = hostile_bytes([value]) | hostile_cbor([cbor2.loads(value)], resign)
    key, now = str(case["key"]), float(case["now"])  # type: ignore[arg-type]
    count = fuzz(hostile, lambda data: decode_record(key, data, now=now))
    assert count >= FUZZ_EXAMPLES


def test_select_record_10k_hostile_value_lists() -> None:
    case = V["valid"][0]
    value = bytes.fromhex(case["value"])
    hostile = st.lists(hostile_bytes([value]) | st.just(value), max_size=4)
    count = fuzz(hostile, lambda values: select_record(case["key"], values, now=case["now"]))
    assert count >= FUZZ_EXAMPLES
