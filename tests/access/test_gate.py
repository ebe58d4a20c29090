"""The gate's decisions: which key header counts, 401 for missing, wrong and revoked keys, 429 for each limit,
loopback clients free of address limits, in-flight slots held until released."""

from __future__ import annotations

from meshp2p.access.gate import AddressLimits, Admitted, Denied, Gate, presented_key
from meshp2p.access.keys import Keyring

LAN = "192.168.1.20"
LOCAL = "127.0.0.1"


def test_bearer_and_x_api_key_are_both_keys() -> None:
    assert presented_key({"authorization": "Bearer abc"}) == "abc"
    assert presented_key({"authorization": "bearer  abc "}) == "abc"
    assert presented_key({"x-api-key": "xyz"}) == "xyz"
    assert presented_key({"authorization": "Basic Zm9v", "x-api-key": "xyz"}) == "xyz"
    assert presented_key({}) is None and presented_key({"authorization": "Bearer "}) is None


def test_keys_off_admits_everyone_without_a_key() -> None:
    decision = Gate().check({}, LOCAL, None, 0.0)
    assert isinstance(decision, Admitted) and decision.key is None


def test_missing_wrong_and_revoked_keys_are_401() -> None:
    ring, _, good = Keyring().create(name="good", now=0.0)
    ring, _, old = ring.create(name="old", now=0.0)
    ring, _ = ring.revoke("old", now=1.0)
    gate = Gate()
    codes = []
    for headers in ({}, {"authorization": "Bearer mp-sk-wrong"}, {"x-api-key": old}):
        decision = gate.check(headers, LOCAL, ring, 2.0)
        assert isinstance(decision, Denied) and decision.status == 401
        codes.append(decision.code)
    assert codes == ["missing_api_key", "invalid_api_key", "revoked_api_key"]
    admitted = gate.check({"x-api-key": good}, LOCAL, ring, 2.0)
    assert isinstance(admitted, Admitted) and admitted.key is not None and admitted.key.name == "good"
    empty = gate.check({"x-api-key": good}, LOCAL, Keyring(), 2.0)
    assert isinstance(empty, Denied) and empty.status == 401, "an empty keys file keeps keys on"


def test_a_keys_rate_is_429_with_the_seconds_to_wait() -> None:
    ring, _, text = Keyring().create(name="slow", now=0.0, rate_rpm=2)
    gate, headers = Gate(), {"authorization": f"Bearer {text}"}
    assert all(isinstance(gate.check(headers, LOCAL, ring, t), Admitted) for t in (0.0, 10.0))
    denied = gate.check(headers, LOCAL, ring, 15.0)
    assert isinstance(denied, Denied) and (denied.status, denied.retry_after_s, denied.code) == (429, 45,
                                                                                                   "rate_limited")


def test_concurrency_slots_are_held_until_released_and_freed_on_refusal() -> None:
    ring, _, text = Keyring().create(name="k", now=0.0, concurrent=1)
    gate, headers = Gate(AddressLimits(rate_rpm=None, concurrent=2)), {"x-api-key": text}
    first = gate.check(headers, LAN, ring, 0.0)
    assert isinstance(first, Admitted)
    busy = gate.check(headers, LAN, ring, 0.0)
    assert isinstance(busy, Denied) and busy.code == "too_many_concurrent" and busy.retry_after_s == 1
    assert gate.in_flight("address", LAN) == 1, "the refused request gave its address slot back"
    gate.release(first)
    assert gate.in_flight("address", LAN) == 0 and gate.in_flight("key", first.key.id if first.key else "") == 0
    assert isinstance(gate.check(headers, LAN, ring, 0.0), Admitted)


def test_address_limits_apply_to_other_machines_only_and_before_the_key() -> None:
    ring, _, _ = Keyring().create(name="k", now=0.0)
    gate = Gate(AddressLimits(rate_rpm=2, concurrent=None))
    for t in (0.0, 1.0):
        denied = gate.check({"x-api-key": "guess"}, LAN, ring, t)
        assert isinstance(denied, Denied) and denied.status == 401
    limited = gate.check({"x-api-key": "guess"}, LAN, ring, 2.0)
    assert isinstance(limited, Denied) and limited.status == 429 and limited.retry_after_s == 58, \
        "guessing keys from one address is rate limited too"
    assert all(isinstance(gate.check({}, LOCAL, None, 2.0), Admitted) for _ in range(10)), "loopback: no limit"
    assert isinstance(gate.check({}, "::1", None, 2.0), Admitted)
    other = gate.check({}, "10.0.0.9", None, 2.0)
    assert isinstance(other, Admitted), "addresses are counted apart"
