"""mesh/sources.py: which members a model file is fetched from."""

from __future__ import annotations

from meshp2p.mesh.sources import FileSources, file_holders, file_sources
from meshp2p.mesh.view import PeerView
from meshp2p.wire.model_id import ContentId
from meshp2p.wire.status import Role, StatusBody

A_FILE = ContentId(bytes(range(16)), 1000)
B_FILE = ContentId(bytes(range(1, 17)), 1000)


def _peer(peer_id: str, last_seen: float, files: dict[str, ContentId], available: tuple[str, ...] | None = None,
          ) -> PeerView:
    status = StatusBody(role=Role.HOST, ram_mb=1, vram_mb=0, gpu=None, loaded=(), load=0.0, api_port=None,
                        available=tuple(files) if available is None else available, version="0", region=None,
                        rtt_ms={}, files=files)
    return PeerView(peer_id, status, last_seen)


def test_the_file_most_members_offer_and_its_holders_freshest_first() -> None:
    peers = [_peer("a", 1.0, {"m": A_FILE}), _peer("b", 3.0, {"m": A_FILE}), _peer("c", 2.0, {"m": B_FILE}),
             _peer("me", 9.0, {"m": B_FILE})]
    assert file_sources(peers, "m", self_id="me") == FileSources(A_FILE, ("b", "a"))


def test_a_tie_goes_to_the_smaller_content_id_so_every_node_picks_the_same() -> None:
    peers = [_peer("a", 1.0, {"m": B_FILE}), _peer("b", 1.0, {"m": A_FILE})]
    assert file_sources(peers, "m", self_id="me") == FileSources(A_FILE, ("b",))
    assert file_sources(list(reversed(peers)), "m", self_id="me") == FileSources(A_FILE, ("b",))


def test_an_expected_file_is_the_only_one_asked_for() -> None:
    peers = [_peer("a", 1.0, {"m": A_FILE}), _peer("b", 1.0, {"m": A_FILE}), _peer("c", 1.0, {"m": B_FILE})]
    assert file_sources(peers, "m", self_id="me", expected=B_FILE) == FileSources(B_FILE, ("c",))
    assert file_sources(peers[:2], "m", self_id="me", expected=B_FILE) is None


def test_nobody_offering_it_means_no_sources() -> None:
    # A content id without the model in `available` (it stopped offering it) does not count, nor does our own.
    peers = [_peer("a", 1.0, {"m": A_FILE}, available=()), _peer("me", 1.0, {"m": A_FILE}),
             _peer("b", 1.0, {"other": A_FILE})]
    assert file_sources(peers, "m", self_id="me") is None


def test_file_holders_are_matched_by_content_under_any_name_freshest_first() -> None:
    peers = [_peer("a", 1.0, {"m": A_FILE}), _peer("b", 3.0, {"copy-of-m": A_FILE}), _peer("c", 2.0, {"m": B_FILE}),
             _peer("me", 9.0, {"m": A_FILE})]
    assert file_holders(peers, A_FILE, self_id="me") == ("b", "a")
    assert file_holders(peers, ContentId(bytes(16), 5), self_id="me") == ()
