"""Keys: made, found by their hash only, selected by name or id, revoked; the file keeps no key text, mode 0600."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from meshp2p.access.files import KeysFile, read_keyring, update_keyring, write_keyring
from meshp2p.access.keys import KEY_PREFIX, Keyring, key_hash
from meshp2p.errors import ConfigError


def test_a_key_is_found_by_its_text_and_only_its_hash_is_kept(tmp_path: Path) -> None:
    ring, record, text = Keyring().create(name="alice", now=1.0, rate_rpm=5)
    assert text.startswith(KEY_PREFIX) and len(text) > 40
    assert record.sha256 == key_hash(text) and ring.find(text) == record
    assert ring.find(text + "x") is None and ring.find("") is None
    path = tmp_path / "keys.json"
    write_keyring(path, ring)
    raw = path.read_text()
    assert text not in raw and text[len(KEY_PREFIX):] not in raw, "the file holds no key text"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_keyring(path) == ring
    assert json.loads(raw)["keys"][0]["rate_rpm"] == 5


def test_select_by_name_id_or_unique_prefix() -> None:
    ring, a, _ = Keyring().create(name="a", now=1.0)
    ring, b, _ = ring.create(name="b", now=2.0)
    assert ring.select("a") == a and ring.select(b.id) == b and ring.select(b.id[:6]) == b
    with pytest.raises(ConfigError, match="no key"):
        ring.select("zzz-nobody")
    with pytest.raises(ConfigError, match="exists already"):
        ring.create(name="a", now=3.0)
    with pytest.raises(ConfigError, match="at least 1"):
        ring.create(name="c", now=3.0, rate_rpm=0)


def test_revoking_marks_the_key_and_keeps_it() -> None:
    ring, a, text = Keyring().create(name="a", now=1.0)
    ring, revoked = ring.revoke("a", now=5.0)
    assert revoked.revoked_at == 5.0 and ring.find(text) == revoked and len(ring.keys) == 1
    again, same = ring.revoke(a.id, now=9.0)
    assert again == ring and same.revoked_at == 5.0
    ring, fresh, _ = ring.create(name="a", now=6.0)
    assert ring.select("a") == fresh, "the live key of a reused name wins"


def test_update_keyring_starts_from_nothing_and_keeps_earlier_keys(tmp_path: Path) -> None:
    path = tmp_path / "home" / "keys.json"
    first = update_keyring(path, lambda ring: ring.create(name="one", now=1.0)[:2])
    second = update_keyring(path, lambda ring: ring.create(name="two", now=2.0)[:2])
    assert [k.name for k in (read_keyring(path) or Keyring()).keys] == ["one", "two"]
    assert first.name == "one" and second.name == "two"


def test_keys_file_follows_the_file_and_a_damaged_one_closes_rather_than_opens(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    watched = KeysFile(path)
    assert watched.current() is None, "no file: keys off"
    ring, _, text = Keyring().create(name="a", now=1.0)
    write_keyring(path, ring)
    current = watched.current()
    assert current is not None and current.find(text) is not None
    path.write_text("{not json")
    current = watched.current()
    assert current is not None and current.find(text) is not None, "the last good keys stay"
    fresh = KeysFile(path)
    current = fresh.current()
    assert current is not None and current.keys == (), "damaged with nothing good before: no key is valid"
    path.unlink()
    assert watched.current() is None
