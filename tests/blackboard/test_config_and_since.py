"""`$MESHP2P_HOME/config.toml` and the `--since` forms."""

from __future__ import annotations

import pytest

from meshp2p.app.config import load_config
from meshp2p.blackboard.since import parse_since
from meshp2p.errors import ConfigError

NOW = 1_800_000_000.0


def test_no_file_means_defaults(tmp_path):
    config = load_config(tmp_path / "config.toml")
    assert config.blackboard.limits.rate_per_min == 10 and config.blackboard.limits.capacity == 500
    assert config.blackboard.limits.ttl_s == 48 * 3600 and config.blackboard.scrub is True


def test_blackboard_table_sets_the_policy(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[blackboard]\nrate_per_min = 30\nttl_hours = 1.5\ncapacity = 50\nscrub = false\n")
    board = load_config(path).blackboard
    assert (board.limits.rate_per_min, board.limits.ttl_s, board.limits.capacity, board.scrub) == (30, 5400, 50, False)


@pytest.mark.parametrize("text, needle", [
    ("[blackboard]\nrate = 3\n", "unknown [blackboard] key"),
    ("[blackbored]\n", "unknown table"),
    ("[blackboard]\nrate_per_min = 0\n", "rate_per_min"),
    ("[blackboard]\nscrub = 'yes'\n", "scrub"),
    ("[blackboard\n", "not valid TOML"),
])
def test_mistakes_are_errors_with_a_hint(tmp_path, text, needle):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert needle in caught.value.message and caught.value.hint


@pytest.mark.parametrize("value, expected_ms", [
    ("90s", (NOW - 90) * 1000),
    ("15m", (NOW - 900) * 1000),
    ("2h", (NOW - 7200) * 1000),
    ("1.5d", (NOW - 129600) * 1000),
    ("1w", (NOW - 604800) * 1000),
    ("1700000000", 1_700_000_000_000),
    ("2026-01-01T00:00", 1_767_225_600_000),
    ("2026-01-01T01:00+01:00", 1_767_225_600_000),
])
def test_since_forms(value, expected_ms):
    assert parse_since(value, now=NOW) == int(expected_ms)


def test_since_nonsense_says_what_works():
    with pytest.raises(ConfigError) as caught:
        parse_since("last tuesday", now=NOW)
    assert "2h" in (caught.value.hint or "")
