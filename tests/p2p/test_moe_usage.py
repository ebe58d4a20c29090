"""`/meshp2p/moe-usage/1.0.0` between real overlays on loopback: a member is given measured counts, an outsider
is refused and counted, a peer without counts says so, and forged or malformed answers are rejected and counted
by the asker (which never crashes: it just has no counts from that peer)."""

from __future__ import annotations

from typing import Any

from helpers.network import Node, network, read_until_eof, wait_for

from meshp2p.p2p.moe_usage import UsageServer, ask_usage
from meshp2p.wire import moe_usage as mu
from meshp2p.wire._cbor import dumps
from meshp2p.wire.framing import frame_bytes
from meshp2p.wire.model_id import ContentId

CID = ContentId(bytes(range(16)), 4096)
COUNTS: mu.Counts = ((9, 1, 0, 2), (3, 3, 1, 1), (0, 0, 7, 1))
DIGEST = mu.usage_digest(mu.SOURCE_IMATRIX, COUNTS)


async def _pair(net: Any, members: set[str], usage: dict[ContentId, tuple[str, mu.Counts]]) -> tuple[Node, Node]:
    holder = await net.start_overlay()

    async def lookup(cid: ContentId) -> tuple[str, mu.Counts] | None:
        return usage.get(cid)

    UsageServer(holder.overlay, is_member=lambda p: str(p) in members, lookup=lookup).install()
    asker = await net.start_overlay(bootstrap=(holder.overlay.addrs()[0],))
    return holder, asker


async def _ask(asker: Node, holder: Node, *, cid: ContentId = CID, shape: tuple[int, int] = (3, 4),
               digest: str | None = DIGEST) -> mu.UsageAnswer | None:
    return await ask_usage(asker.overlay, holder.peer_id, cid, n_layers=shape[0], n_expert=shape[1], digest=digest)


def _rejects(node: Node) -> dict[str, int]:
    return {k: v for k, v in node.overlay.rejects.as_dict().items() if k.startswith("moe_usage:")}


async def test_a_member_is_given_the_measured_counts() -> None:
    members: set[str] = set()
    async with network() as net:
        holder, asker = await _pair(net, members, {CID: (mu.SOURCE_IMATRIX, COUNTS)})
        members.add(asker.peer_id)
        got = await _ask(asker, holder)
        assert got == mu.UsageAnswer(mu.SOURCE_IMATRIX, COUNTS, DIGEST)
        assert await _ask(asker, holder, digest=None) == got  # a holder asked for any measured counts
        assert _rejects(asker) == {} and _rejects(holder) == {}


async def test_an_outsider_is_refused_and_counted() -> None:
    async with network() as net:
        holder, asker = await _pair(net, set(), {CID: (mu.SOURCE_IMATRIX, COUNTS)})
        assert await _ask(asker, holder) is None
        assert _rejects(holder) == {"moe_usage:not_member": 1}
        # What came back is the refusal, byte for byte, and nothing of the counts.
        stream = await asker.overlay.open_stream(holder.overlay.peer_id, mu.MOE_USAGE_PROTOCOL_ID)
        await stream.write(mu.encode_request(CID))
        assert await read_until_eof(stream) == mu.encode_refused("not_member")


async def test_no_counts_or_only_the_estimate_is_not_have() -> None:
    members: set[str] = set()
    other = ContentId(bytes(16), 5)
    async with network() as net:
        holder, asker = await _pair(net, members, {other: (mu.SOURCE_WEIGHT_NORM, COUNTS)})
        members.add(asker.peer_id)
        assert await _ask(asker, holder) is None
        assert await _ask(asker, holder, cid=other, digest=None) is None
        assert _rejects(asker) == {} and _rejects(holder) == {}


async def test_forged_and_malformed_answers_are_rejected_and_counted() -> None:
    good = {"v": 1, "t": "usage", "source": mu.SOURCE_IMATRIX, "counts": [list(r) for r in COUNTS],
            "digest": DIGEST}
    answers = [
        frame_bytes(dumps({**good, "counts": [[0, 0, 0, 12], [3, 3, 1, 1], [0, 0, 7, 1]]}), max_bytes=2**22),
        frame_bytes(dumps({**good, "counts": "lots"}), max_bytes=2**22),
        (mu.MAX_ANSWER_BYTES + 1).to_bytes(4, "big"),
        mu.encode_usage(mu.SOURCE_IMATRIX, COUNTS)[:-3],
        b"\x00\x00\x00\x02\xa0",
    ]
    async with network() as net:
        liar = await net.start_overlay()
        sent: list[bytes] = []

        async def forge(stream: Any) -> None:
            mu.decode_request(b"".join([await stream.read(4096)])[4:])
            await stream.write(answers[len(sent)])
            sent.append(answers[len(sent)])

        liar.overlay.serve(mu.MOE_USAGE_PROTOCOL_ID, forge)
        asker = await net.start_overlay(bootstrap=(liar.overlay.addrs()[0],))
        for _ in answers:
            assert await _ask(asker, liar) is None
        assert _rejects(asker) == {"moe_usage:bad_digest": 1, "moe_usage:malformed": 1, "moe_usage:oversized": 1,
                                   "moe_usage:truncated": 2}


async def test_counts_of_another_shape_or_digest_are_rejected_and_counted() -> None:
    members: set[str] = set()
    async with network() as net:
        holder, asker = await _pair(net, members, {CID: (mu.SOURCE_IMATRIX, COUNTS)})
        members.add(asker.peer_id)
        assert await _ask(asker, holder, shape=(4, 4)) is None
        assert await _ask(asker, holder, shape=(3, 8)) is None
        assert await _ask(asker, holder, digest="0" * 16) is None
        assert _rejects(asker) == {"moe_usage:shape_mismatch": 2, "moe_usage:key_mismatch": 1}


async def test_a_hostile_request_is_counted_by_the_listener() -> None:
    async with network() as net:
        holder, asker = await _pair(net, set(), {})
        for data in (frame_bytes(dumps({"v": 1, "id": "x"}), max_bytes=256), (257).to_bytes(4, "big")):
            stream = await asker.overlay.open_stream(holder.overlay.peer_id, mu.MOE_USAGE_PROTOCOL_ID)
            await stream.write(data)
            assert await read_until_eof(stream) == b""
        await wait_for(lambda: _rejects(holder) == {"moe_usage:malformed": 1, "moe_usage:oversized": 1},
                       "the listener to count both requests")
