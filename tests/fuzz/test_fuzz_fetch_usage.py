"""The model-fetch and MoE-usage decoders (protocols/model-fetch.md, protocols/moe-usage.md): 10 000 hostile
inputs each, only WireError comes out.

Inputs start from the spec's vectors: bit flips, truncations, splices and random bytes of the frames each side
receives, fed to the dialer's reader in two chunks as a stream would deliver them.
"""

from __future__ import annotations

from helpers.fuzz import FUZZ_EXAMPLES, fuzz, hostile_bytes
from helpers.wire import load_vectors
from hypothesis import strategies as st

from meshp2p.wire import model_fetch as mf
from meshp2p.wire import moe_usage
from meshp2p.wire.model_id import parse_content_id

FETCH = load_vectors("model-fetch.json")
USAGE = load_vectors("moe-usage.json")


def _frames(session: list[dict[str, str]], side: str) -> list[bytes]:
    return [bytes.fromhex(m["frame"]) for m in session if m["from"] == side]


def _split(data: bytes, at: int) -> tuple[bytes, bytes]:
    cut = at % (len(data) + 1)
    return data[:cut], data[cut:]


def test_model_fetch_dialer_reader_10k() -> None:
    """What a holder sends: manifest, refusals, a split's parts list (chunk bytes follow unframed)."""
    file, split = FETCH["file"], FETCH["split"]
    valid = _frames(file["session"], "listener") + _frames(split["session"], "listener")
    valid += [bytes.fromhex(r["frame"]) for r in file["refusals"]]
    content_id = parse_content_id(file["content_id"])

    def read(chunks: tuple[bytes, bytes]) -> None:
        reader = mf.DialerReader(content_id)
        for chunk in chunks:
            reader.feed(chunk)

    strategy = st.tuples(hostile_bytes(valid), st.integers(min_value=0)).map(lambda t: _split(*t))
    assert fuzz(strategy, read) >= FUZZ_EXAMPLES


def test_model_fetch_listener_messages_10k() -> None:
    """What a dialer sends (open, get, list), as the listener decodes each frame's payload."""
    frames = _frames(FETCH["file"]["session"], "dialer") + _frames(FETCH["split"]["session"], "dialer")
    payloads = [f[4:] for f in frames] + [bytes.fromhex(c["payload"]) for c in FETCH["invalid"] if "payload" in c]
    assert fuzz(hostile_bytes(payloads), mf.decode_message) >= FUZZ_EXAMPLES


def test_moe_usage_answers_and_requests_10k() -> None:
    answer = USAGE["answer"]
    answers = [bytes.fromhex(answer["frame"])] + [bytes.fromhex(r["frame"]) for r in USAGE["refusals"]]

    def read(received: bytes) -> None:
        moe_usage.read_answer(received, n_layers=answer["n_layers"], n_expert=answer["n_expert"],
                              digest=answer["digest"])

    assert fuzz(hostile_bytes(answers), read) >= FUZZ_EXAMPLES

    requests = [bytes.fromhex(USAGE["request"]["frame"])[4:]]
    requests += [bytes.fromhex(c["payload"]) for c in USAGE["invalid_requests"]]
    assert fuzz(hostile_bytes(requests), moe_usage.decode_request) >= FUZZ_EXAMPLES
