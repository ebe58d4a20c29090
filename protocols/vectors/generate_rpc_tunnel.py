"""Write rpc-tunnel.json in this folder from fixed inputs; `--check` fails if the file on disk differs.

Same conventions as generate.py (lowercase hex, every negative vector checked against the implementation to fail
with the reason it names). Frames that no encoder would produce are built by hand.

    /work/venv/bin/python protocols/vectors/generate_rpc_tunnel.py          # rewrite the file
    /work/venv/bin/python protocols/vectors/generate_rpc_tunnel.py --check  # tests: the vectors are current
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from meshp2p.wire import rpc_tunnel as r
from meshp2p.wire._cbor import dumps

# The shared writer is a sibling file, not a package: keep these generators runnable as plain scripts.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectorfile import reason_of, write_or_check

FILE_NAME = "rpc-tunnel.json"

#: The hello the dialer-side invalid vectors were sent after.
SENT_HELLO = r.RpcHello("gemma-3-270m", 2)
#: The first bytes llama.cpp's RPC client sends (RPC protocol 7, b11434, TCP-only build): command RPC_CMD_HELLO = 14,
#: its input size (24, little-endian u64) and 24 bytes of transport capabilities (none). Opaque to the tunnel: here
#: only to show that bytes after a frame are passed on untouched.
RPC_CLIENT_HELLO = bytes([14]) + (24).to_bytes(8, "little") + bytes(24)
#: The RPC server's answer: output size 28, version 7.0.0, a padding byte and 24 bytes of capabilities.
RPC_SERVER_HELLO = (28).to_bytes(8, "little") + bytes([7, 0, 0, 0]) + bytes(24)


def raw_frame(payload: bytes) -> bytes:
    """A frame around any payload, for the negative vectors no encoder would write."""
    return len(payload).to_bytes(r.FRAME_HEADER_BYTES, "big") + payload


def hello_map(**changes: Any) -> dict[str, Any]:
    return {"v": 1, "model": "gemma-3-270m", "threads": 2, **changes}



def hello_vectors() -> list[dict[str, Any]]:
    hellos = [
        ("model_and_threads", r.RpcHello("gemma-3-270m", 2)),
        ("content_id", r.RpcHello("sha256:" + "ab" * 32, None)),
        ("nothing", r.RpcHello(None, None)),
        ("longest_model_most_threads", r.RpcHello("m" * r.MAX_MODEL_CHARS, r.MAX_THREADS)),
        ("unicode_model", r.RpcHello("modèle-7b", 1)),
    ]
    cases = []
    for name, hello in hellos:
        data = r.encode_hello(hello)
        listener = r.RpcListener()
        assert listener.receive(data) == hello and listener.rest == b"", name
        cases.append({"name": name, "model": hello.model, "threads": hello.threads, "hex": data.hex()})
    return cases


def reply_vectors() -> list[dict[str, Any]]:
    replies = [
        ("ok", r.RpcReply(True)),
        ("not_member", r.RpcReply(False, r.NOT_MEMBER)),
        ("rpc_unavailable", r.RpcReply(False, r.RPC_UNAVAILABLE)),
        ("bad_version", r.RpcReply(False, "bad_version")),
    ]
    cases = []
    for name, reply in replies:
        data = r.encode_reply(reply)
        assert r.decode_reply(data[r.FRAME_HEADER_BYTES :]) == reply, name
        cases.append({"name": name, "ok": reply.ok, "error": reply.error, "hex": data.hex()})
    return cases


def exchange_vectors() -> list[dict[str, Any]]:
    """A frame and the RPC bytes that came in the same read: the machine hands the RPC bytes back untouched."""
    hello = r.encode_hello(SENT_HELLO) + RPC_CLIENT_HELLO
    listener = r.RpcListener()
    assert listener.receive(hello) == SENT_HELLO and listener.rest == RPC_CLIENT_HELLO
    reply = r.accept() + RPC_SERVER_HELLO
    dialer = r.RpcDialer(SENT_HELLO)
    dialer.hello_frame()
    assert dialer.receive(reply) == RPC_SERVER_HELLO and dialer.is_open
    return [
        {"name": "hello_then_rpc", "side": "listener", "received": hello.hex(), "rpc_bytes": RPC_CLIENT_HELLO.hex()},
        {"name": "ok_then_rpc", "side": "dialer", "received": reply.hex(), "rpc_bytes": RPC_SERVER_HELLO.hex()},
    ]


def invalid_vectors() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []

    def run(side: str, received: bytes, eof: bool) -> None:
        machine: r.RpcListener | r.RpcDialer
        if side == "listener":
            machine = r.RpcListener()
        else:
            machine = r.RpcDialer(SENT_HELLO)
            machine.hello_frame()
        if received:
            machine.receive(received)
        if eof:
            machine.eof()

    def bad(name: str, reason: str, side: str, received: bytes, *, eof: bool = False) -> None:
        got = reason_of(lambda: run(side, received, eof))
        if got != reason:
            raise AssertionError(f"vector {name}: expected {reason}, implementation says {got}")
        cases.append({"name": name, "side": side, "received": received.hex(), "eof": eof, "reason": reason})

    def hello(**changes: Any) -> bytes:
        return raw_frame(dumps(hello_map(**changes)))

    def reply(m: dict[str, Any]) -> bytes:
        return raw_frame(dumps(m))

    too_long = (r.MAX_FRAME_BYTES + 1).to_bytes(4, "big")
    no_threads = {k: v for k, v in hello_map().items() if k != "threads"}
    # The hello (listener side).
    bad("hello_over_limit", "oversized", "listener", too_long)
    bad("hello_empty_frame", "malformed", "listener", raw_frame(b""))
    bad("hello_not_a_map", "malformed", "listener", raw_frame(dumps([1, "gemma-3-270m", 2])))
    canonical = dumps(hello_map())
    assert canonical.endswith(b"gthreads\x02")
    bad("hello_int_not_shortest", "malformed", "listener", raw_frame(canonical[:-1] + b"\x18\x02"))
    bad("hello_trailing_bytes_in_frame", "malformed", "listener", raw_frame(dumps(hello_map()) + b"\x00"))
    bad("hello_bad_version", "bad_version", "listener", hello(v=2))
    bad("hello_version_text", "malformed", "listener", hello(v="1"))
    bad("hello_extra_key", "malformed", "listener", hello(mesh=b"\x00" * 16))
    bad("hello_missing_threads", "malformed", "listener", raw_frame(dumps(no_threads)))
    bad("hello_empty_model", "malformed", "listener", hello(model=""))
    bad("hello_model_too_long", "malformed", "listener", hello(model="m" * (r.MAX_MODEL_CHARS + 1)))
    bad("hello_model_bytes", "malformed", "listener", hello(model=b"gemma"))
    bad("hello_threads_zero", "malformed", "listener", hello(threads=0))
    bad("hello_threads_too_many", "malformed", "listener", hello(threads=r.MAX_THREADS + 1))
    bad("hello_threads_bool", "malformed", "listener", hello(threads=True))
    bad("hello_threads_float", "malformed", "listener", hello(threads=2.0))
    bad("hello_is_a_reply", "malformed", "listener", r.accept())
    bad("hello_truncated_header", "truncated", "listener", r.encode_hello(SENT_HELLO)[:3], eof=True)
    bad("hello_truncated_payload", "truncated", "listener", r.encode_hello(SENT_HELLO)[:-1], eof=True)
    bad("hello_nothing", "truncated", "listener", b"", eof=True)
    # The reply (dialer side, after sending SENT_HELLO).
    bad("reply_not_member", "rejected", "dialer", r.refuse(r.NOT_MEMBER))
    bad("reply_unknown_code", "rejected", "dialer", reply({"v": 1, "ok": False, "error": "gone_fishing"}))
    bad("reply_over_limit", "oversized", "dialer", too_long)
    bad("reply_bad_version", "bad_version", "dialer", reply({"v": 2, "ok": True}))
    bad("reply_ok_with_error", "malformed", "dialer", reply({"v": 1, "ok": True, "error": "not_member"}))
    bad("reply_refusal_without_error", "malformed", "dialer", reply({"v": 1, "ok": False}))
    bad("reply_ok_integer", "malformed", "dialer", reply({"v": 1, "ok": 1}))
    bad("reply_missing_ok", "malformed", "dialer", reply({"v": 1}))
    bad("reply_error_empty", "malformed", "dialer", reply({"v": 1, "ok": False, "error": ""}))
    bad("reply_error_not_a_code", "malformed", "dialer", reply({"v": 1, "ok": False, "error": "Not a member"}))
    bad("reply_error_too_long", "malformed", "dialer", reply({"v": 1, "ok": False, "error": "x" * 65}))
    bad("reply_is_a_hello", "malformed", "dialer", r.encode_hello(SENT_HELLO))
    bad("reply_truncated_header", "truncated", "dialer", r.accept()[:2], eof=True)
    bad("reply_truncated_payload", "truncated", "dialer", r.accept()[:-1], eof=True)
    bad("reply_nothing", "truncated", "dialer", b"", eof=True)
    return cases


def build() -> dict[str, Any]:
    return {
        "format": "rpc-tunnel",
        "spec": "protocols/rpc-tunnel.md",
        "constants": {
            "protocol_id": r.RPC_PROTOCOL_ID,
            "frame_header_bytes": r.FRAME_HEADER_BYTES,
            "max_frame_bytes": r.MAX_FRAME_BYTES,
            "max_model_chars": r.MAX_MODEL_CHARS,
            "max_threads": r.MAX_THREADS,
            "max_error_chars": r.MAX_ERROR_CHARS,
        },
        "sent_hello": {"model": SENT_HELLO.model, "threads": SENT_HELLO.threads},
        "hellos": hello_vectors(),
        "replies": reply_vectors(),
        "exchanges": exchange_vectors(),
        "invalid": invalid_vectors(),
    }


def main(argv: list[str] | None = None) -> int:
    return write_or_check(__doc__ or "", lambda: {FILE_NAME: build()}, Path(__file__).name, argv)


if __name__ == "__main__":
    raise SystemExit(main())
