"""Scrubbing: each kind of secret is replaced, ordinary technical text is left exactly as it was."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshp2p.blackboard import SCRUB_KINDS, scrub
from meshp2p.blackboard.scrub import placeholder

# Shaped like the real thing, made up (the AWS pair is AWS's own documentation example).
OPENAI_LEGACY = "sk-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0hIj3kLm6n"
OPENAI_PROJECT = "sk-proj-" + "Zx9_Yw8-Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa_zyXWvuTSrqPONmlkJIhgFEdcBA98765" * 2
ANTHROPIC = "sk-ant-api03-" + "aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uV_wX-yZ" * 2 + "AA"
HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"
GITHUB_CLASSIC = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
GITHUB_FINE = "github_pat_11ABCDEFG0" + "abcdefghijABCDEFGHIJ0123456789_abcdefghijABCDEFGHIJ0123456789ab"
AWS_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GOOGLE_KEY = "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"
GOOGLE_TOKEN = "ya29.a0AfH6SMBx1y2z3A4B5C6D7E8F9G0h"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi4Tn9bP1F1g0ZkB0pSOd5dN0yP\n"
    "Proc-Type: 4,ENCRYPTED\n"
    "q8o2XkG7h6f5E4d3C2b1A0zYxWvUtSrQpOnMlKjIhGfEdCbA9876543210abcdef\n"
    "-----END RSA PRIVATE KEY-----"
)
OPENSSH = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("secret", "kind"),
    [
        (OPENAI_LEGACY, "openai key"),
        (OPENAI_PROJECT, "openai key"),
        (ANTHROPIC, "anthropic key"),
        (HF, "huggingface token"),
        (GITHUB_CLASSIC, "github token"),
        (GITHUB_FINE, "github token"),
        (AWS_ID, "aws access key"),
        (GOOGLE_KEY, "google api key"),
        (GOOGLE_TOKEN, "google oauth token"),
        (JWT, "jwt"),
        (PEM, "private key"),
        (OPENSSH, "private key"),
        ("alice.smith+mesh@example.co.uk", "email"),
        ("bob@mail.example.org", "email"),
    ],
)
def test_each_kind_is_replaced_in_context(secret: str, kind: str) -> None:
    text = f"Context before:\n{secret}\n(and after)"
    assert scrub(text) == (f"Context before:\n{placeholder(kind)}\n(and after)", [kind])
    assert scrub(f"key={secret};") == (f"key={placeholder(kind)};", [kind])


def test_aws_secret_keeps_its_label() -> None:
    env = f'export AWS_SECRET_ACCESS_KEY="{AWS_SECRET}"\naws_access_key_id = {AWS_ID}'
    assert scrub(env) == (
        'export AWS_SECRET_ACCESS_KEY="[redacted: aws secret key]"\naws_access_key_id = [redacted: aws access key]',
        ["aws access key", "aws secret key"],
    )
    assert scrub(f"aws_secret_access_key: {AWS_SECRET}")[0] == "aws_secret_access_key: [redacted: aws secret key]"
    assert scrub(f"some value {AWS_SECRET}") == (f"some value {AWS_SECRET}", []), "no label, no redaction"


def test_truncated_private_key_is_still_caught() -> None:
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3S\n"
    text = "oops:\n-----BEGIN PRIVATE KEY-----\n" + body + "\nthat was a mistake"
    assert scrub(text) == ("oops:\n[redacted: private key]\n\nthat was a mistake", ["private key"])


def test_several_kinds_are_reported_once_in_table_order() -> None:
    text = f"mail me at a@example.com, key {HF} and {OPENAI_LEGACY}, again {HF}, b@example.com"
    scrubbed, kinds = scrub(text)
    assert kinds == ["openai key", "huggingface token", "email"]
    assert scrubbed == (
        "mail me at [redacted: email], key [redacted: huggingface token] and [redacted: openai key], "
        "again [redacted: huggingface token], [redacted: email]"
    )
    assert set(kinds) <= set(SCRUB_KINDS)


def test_a_pem_block_is_one_redaction_even_with_an_email_inside() -> None:
    pgp = (
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nComment: alice@example.com\n\nlQOYBF...\n"
        "-----END PGP PRIVATE KEY BLOCK-----"
    )
    assert scrub(pgp) == ("[redacted: private key]", ["private key"])


ORDINARY = [
    "sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "commit 9fceb02d0ae598e95dc970b74767f19372d61af8 fixes it",
    "uuid 123e4567-e89b-12d3-a456-426614174000 and 550E8400-E29B-41D4-A716-446655440000",
    "pip install scikit-learn; from sklearn import sk-learn-pipeline-configuration-helper",
    "risk-management-framework-for-enterprise-grade-deployments",
    "task-ant-colony-optimisation-for-routing-problems",
    "huggingface_hub.hf_hub_download(repo_id='x'); hf_transfer_enabled_for_this_download = 1",
    "ghp_ is the prefix GitHub uses for personal access tokens",
    "AKIA is the prefix of AWS access key ids; AKIASHORT is not one",
    "AIza is the prefix of Google API keys",
    "eyJ is base64 for '{\"', so eyJhbGciOiJIUzI1NiJ9 alone is just a header",
    "git clone git@github.com:owner/repo.git",
    "retina assets icon@2x.png and logo@3x.webp",
    "scores = q@k.transpose(-2, -1); y = x@w.T",
    "ping me @alice, version pkg@1.2.3, decorator @property, user@localhost",
    "base64 blob: TWFueSBoYW5kcyBtYWtlIGxpZ2h0IHdvcmsuIFRoaXMgaXMgYSB0ZXN0IG9mIGJhc2U2NA==",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host",
    "The quick brown fox jumps over the lazy dog. 12% faster on M2 with -fa.",
    "Paths like /home/user/.ssh/id_ed25519 and C:\\Users\\me\\key.pem are not keys",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert scrub(text) == (text, [])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_scrub_is_idempotent_and_total(text: str) -> None:
    once, _ = scrub(text)
    assert scrub(once) == (once, [])


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[0-9a-f]{32,64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", fullmatch=True))
def test_hex_hashes_and_uuids_are_never_scrubbed(text: str) -> None:
    assert scrub(f"id {text} done") == (f"id {text} done", [])
