"""Invite tokens against protocols/vectors/invite-token.json, plus tampering and fuzzing."""

from __future__ import annotations

from typing import Any

import base58
import pytest
from helpers.wire import expect_reason, flip_bit, identity, ids, load_vectors, only_wire_errors
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.wire import decode_token, encode_token, private_mesh_id
from meshp2p.wire.token import MAX_TOKEN_CHARS, TOKEN_PREFIX

V = load_vectors("invite-token.json")
A = identity(V, "A")
NAMED = V["valid"][1]
BASE58_ALPHABET = base58.BITCOIN_ALPHABET.decode("ascii")


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_encoding_reproduces_vector(case: dict[str, Any]) -> None:
    text = encode_token(
        identity(V, case["seed"]),
        bytes.fromhex(case["mesh_id"]),
        bytes.fromhex(case["secret"]),
        case["addrs"],
        now=case["now"],
        name=case["token_name"],
        ttl_s=case["ttl_s"],
    )
    assert text == case["token"]
    assert text.startswith(TOKEN_PREFIX)


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_decoding_valid_vector(case: dict[str, Any]) -> None:
    token = decode_token(case["token"], now=case["now"])
    assert token.mesh_id.hex() == case["mesh_id"]
    assert token.secret.hex() == case["secret"]
    assert list(token.addrs) == case["addrs"]
    assert token.name == case["token_name"]
    assert (token.issued_at, token.expires_at) == (case["issued_at"], case["expires_at"])
    assert token.issuer.hex() == case["issuer"] == A.public_key.hex()


def test_surrounding_whitespace_is_ignored() -> None:
    assert decode_token(V["whitespace"]["token"], now=NAMED["now"]) == decode_token(NAMED["token"], now=NAMED["now"])


def test_never_expiring_token_is_valid_far_in_the_future() -> None:
    case = V["valid"][0]
    assert decode_token(case["token"], now=case["now"] + 10 * 365 * 86400).expires_at is None


@pytest.mark.parametrize("case", V["invalid"], ids=ids(V["invalid"]))
def test_invalid_vector(case: dict[str, Any]) -> None:
    expect_reason(case["reason"], lambda: decode_token(case["token"], now=case["now"]))


@pytest.mark.parametrize("case", V["valid"], ids=ids(V["valid"]))
def test_changing_any_character_is_rejected(case: dict[str, Any]) -> None:
    text = case["token"]
    for i, char in enumerate(text):
        for step in (1, 31):
            replacement = BASE58_ALPHABET[(BASE58_ALPHABET.find(char) + step) % len(BASE58_ALPHABET)]
            tampered = text[:i] + replacement + text[i + 1 :]
            assert tampered != text
            assert not only_wire_errors(lambda t=tampered: decode_token(t, now=case["now"])), (i, replacement)


def test_encoder_checks_its_inputs() -> None:
    secret = bytes.fromhex(NAMED["secret"])
    now = NAMED["now"]
    addrs = NAMED["addrs"]
    assert decode_token(encode_token(A, None, secret, addrs, now=now), now=now).mesh_id == private_mesh_id(secret)
    expect_reason("bad_mesh_id", lambda: encode_token(A, bytes(16), secret, addrs, now=now))
    expect_reason("malformed", lambda: encode_token(A, None, secret, [], now=now))
    expect_reason("malformed", lambda: encode_token(A, None, secret[:31], addrs, now=now))
    expect_reason("malformed", lambda: encode_token(A, None, secret, addrs, now=now, ttl_s=0))


def test_repr_keeps_the_secret_out_of_logs() -> None:
    token = decode_token(NAMED["token"], now=NAMED["now"])
    assert NAMED["secret"] not in repr(token)
    assert NAMED["secret"] not in str(token)


# ---------------------------------------------------------------- hostile input


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet=BASE58_ALPHABET, max_size=600).map(lambda t: TOKEN_PREFIX + t))
def test_random_text_only_raises_wire_error(text: str) -> None:
    assert not only_wire_errors(lambda: decode_token(text, now=NAMED["now"]))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=len(NAMED["token"]) - 1))
def test_bit_flips_and_truncations_are_rejected(bit: int, cut: int) -> None:
    raw = base58.b58decode(NAMED["token"].removeprefix(TOKEN_PREFIX))
    flipped = TOKEN_PREFIX + base58.b58encode(flip_bit(raw, bit)).decode("ascii")
    assert not only_wire_errors(lambda: decode_token(flipped, now=NAMED["now"]))
    assert not only_wire_errors(lambda: decode_token(NAMED["token"][:cut], now=NAMED["now"]))


def test_huge_input_is_rejected_before_decoding() -> None:
    expect_reason("oversized", lambda: decode_token(TOKEN_PREFIX + "z" * 10 * MAX_TOKEN_CHARS, now=0))
    expect_reason("malformed", lambda: decode_token(b"mp1abc", now=0))  # type: ignore[arg-type]
    expect_reason("malformed", lambda: decode_token("mp1ünïcode", now=0))
