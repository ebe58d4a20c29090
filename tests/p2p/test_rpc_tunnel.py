"""`/meshp2p/rpc/1.0.0` with real parts on loopback: a host's llama-server runs layers on a worker's ggml-rpc-server
through two in-process overlays, and answers exactly what it answers alone; a non-member is refused before the RPC
server hears of it. Every process is stopped by PID and every port freed."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from helpers.network import network, port_is_free, wait_for
from helpers.processes import pid_alive
from make_tiny_gguf import write_tiny_gguf

from meshp2p.app.local import OfferedModels
from meshp2p.app.pipeline import PipelineWorker
from meshp2p.hosts import LOOPBACK_HOST
from meshp2p.inference.binaries import LlamaBinaries
from meshp2p.inference.llama_server import BackendState
from meshp2p.inference.models import spec_from_gguf
from meshp2p.inference.ports import free_loopback_port
from meshp2p.inference.processes import stop_process
from meshp2p.inference.rpc_server import OnDemandRpcServer, RpcServer
from meshp2p.p2p.rpc_tunnel import RPC_PROTOCOL, RpcTunnelClient, RpcTunnelServer
from meshp2p.wire.framing import FRAME_HEADER_BYTES
from meshp2p.wire.rpc_tunnel import RpcHello, decode_reply, encode_hello

LAYERS = 6
#: `-ngl` counts the output head as layer LAYERS: blocks 3-5 and the head run on the worker, 0-2 on the host.
GPU_LAYERS = LAYERS // 2 + 1
N_PREDICT = 16
PROMPT = "The history of the mesh begins with"
READY_TIMEOUT_S = 20.0
#: Same flags solo and split; `--no-repack` because the CPU backend repacks weights and RPC does not, which
#: changes rounding (and tokens).
COMMON_FLAGS = ("-t", "1", "--no-repack", "-c", "512", "-np", "1", "--fit", "off", "--no-webui")


def split_flags(bridge_port: int) -> tuple[str, ...]:
    """The RPC server is llama-server's only offload device. `-ot token_embd=CPU` is how meshp2p keeps a tied output
    head (gemma) on the host; this model's head is a separate tensor, and its 1.8 KB of logits per token may cross."""
    return ("--rpc", f"{LOOPBACK_HOST}:{bridge_port}", "-ngl", str(GPU_LAYERS), "-ot", r"token_embd\.weight=CPU")


async def run_llama_server(binaries: LlamaBinaries, model: Path, log: Path, *flags: str,
                           during: Any = None) -> tuple[dict[str, Any], int, int]:
    """Start llama-server, wait for /health, run one greedy completion; returns (answer, pid, port).

    `during(stage)` is awaited at "loaded" and "answered", so the caller can read counters at those moments.
    """
    port = free_loopback_port()
    command = [str(binaries.server), "-m", str(model), "--host", LOOPBACK_HOST, "--port", str(port),
               *COMMON_FLAGS, *flags]
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        async with httpx.AsyncClient(base_url=f"http://{LOOPBACK_HOST}:{port}", timeout=10) as http:
            with trio.fail_after(READY_TIMEOUT_S):
                while True:
                    assert process.returncode is None, f"llama-server exited, see {log}"
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.02)
            if during is not None:
                await during("loaded")
            body = {"prompt": PROMPT, "n_predict": N_PREDICT, "temperature": 0, "cache_prompt": False,
                    "return_tokens": True, "ignore_eos": True}
            response = await http.post("/completion", json=body)
            assert response.status_code == 200, response.text
            answer: dict[str, Any] = response.json()
            if during is not None:
                await during("answered")
    finally:
        await stop_process(process)
    return answer, process.pid, port


async def test_a_split_through_the_bridge_answers_like_solo_and_strangers_are_refused(
    tmp_path: Path, llama_binaries: LlamaBinaries
) -> None:
    model = write_tiny_gguf(tmp_path / "tiny-dense.gguf", "dense", layers=LAYERS, seed=11)
    solo, solo_pid, solo_port = await run_llama_server(llama_binaries, model, tmp_path / "solo.log")
    assert len(solo["tokens"]) == N_PREDICT

    rpc = RpcServer(llama_binaries, log_dir=tmp_path, threads=1, cache_dir=tmp_path / "rpc-cache")
    on_demand = OnDemandRpcServer(rpc)
    port_requests: list[int] = []

    async def rpc_port() -> int:
        port = await on_demand.port()
        port_requests.append(port)
        return port

    async with network() as net:
        worker = await net.start_overlay()
        host = await net.start_overlay(bootstrap=(worker.overlay.addrs()[0],))
        stranger = await net.start_overlay(bootstrap=(worker.overlay.addrs()[0],))
        await net.nursery.start(on_demand.run)
        server = RpcTunnelServer(worker.overlay, is_member=lambda p: p == host.overlay.peer_id, rpc_port=rpc_port)
        server.install()
        worker_id = worker.overlay.peer_id

        # A stranger gets `ok: false` and a closed stream; the RPC server is not even started.
        stream = await stranger.overlay.host.new_stream(worker_id, [RPC_PROTOCOL])
        await stream.write(encode_hello(RpcHello("tiny-dense", 1)))
        reply = await _read_reply(stream)
        assert (reply.ok, reply.error) == (False, "not_member")
        await stream.close()
        # Through a bridge port too: the local TCP connection is simply closed.
        stranger_bridge = RpcTunnelClient(stranger.overlay)
        stranger_port = await net.nursery.start(functools.partial(stranger_bridge.serve_port, worker_id))
        local = await trio.open_tcp_stream(LOOPBACK_HOST, stranger_port)
        with trio.fail_after(5):
            assert await local.receive_some(16) == b""
        await local.aclose()
        assert stranger_bridge.refused == 1 and server.refused == 2
        assert port_requests == [] and rpc.pid is None and rpc.state is BackendState.STARTING
        assert server.bytes_to_rpc == server.bytes_from_rpc == 0

        # The member: llama-server → bridge port → libp2p stream → worker → ggml-rpc-server.
        bridge = RpcTunnelClient(host.overlay)
        bridge_port = await net.nursery.start(
            functools.partial(bridge.serve_port, worker_id, model="tiny-dense", threads=1))
        marks: dict[str, tuple[int, int]] = {}

        async def mark(stage: str) -> None:
            # The last reply of a stage may still be in flight through the worker's side: wait until both agree.
            await wait_for(lambda: (bridge.bytes_to_rpc, bridge.bytes_from_rpc)
                           == (server.bytes_to_rpc, server.bytes_from_rpc), "both ends to count the same bytes")
            marks[stage] = (bridge.bytes_to_rpc, bridge.bytes_from_rpc)

        split, split_pid, split_port = await run_llama_server(
            llama_binaries, model, tmp_path / "split.log", *split_flags(bridge_port), during=mark)
        rpc_pid, rpc_port_used = rpc.pid, rpc.port
        assert rpc.state is BackendState.READY and rpc_pid is not None and pid_alive(rpc_pid)
        assert port_requests and set(port_requests) == {rpc_port_used}
        await wait_for(lambda: bridge.active == 0 and server.active == 0, "llama-server's RPC connections to end")
        assert bridge.connections == server.connections == len(port_requests)

    assert split["tokens"] == solo["tokens"], (split["content"], solo["content"])
    assert split["content"] == solo["content"]
    load_to, load_from = marks["loaded"]
    gen_to, gen_from = (a - b for a, b in zip(marks["answered"], marks["loaded"], strict=True))
    assert load_to > 0 and load_from > 0 and gen_to > 0 and gen_from > 0
    report = {"connections": bridge.connections, "load_bytes_to_rpc": load_to, "load_bytes_from_rpc": load_from,
              "model_file_bytes": model.stat().st_size, "per_token_to_rpc": gen_to // N_PREDICT,
              "per_token_from_rpc": gen_from // N_PREDICT, "tokens_equal": True}
    print("rpc bridge bytes:", json.dumps(report))

    # Everything stopped, by PID, and every port freed.
    for pid in (solo_pid, split_pid, rpc_pid):
        assert not pid_alive(pid), pid
    assert rpc.state is BackendState.STOPPED and rpc.pid is None
    rpc_log = await trio.Path(rpc.log_path).read_text()
    assert f"-H {LOOPBACK_HOST} " in rpc_log and f"local cache    : {tmp_path / 'rpc-cache'}" in rpc_log
    for port in (solo_port, split_port, bridge_port, stranger_port, rpc_port_used):
        assert port is not None and port_is_free(port), port


async def _read_reply(stream: Any) -> Any:
    data = b""
    with trio.fail_after(5):
        while len(data) < FRAME_HEADER_BYTES or len(data) < FRAME_HEADER_BYTES + int.from_bytes(data[:4], "big"):
            data += await stream.read(4096)
    return decode_reply(data[FRAME_HEADER_BYTES:])


async def _answer_after_eof(sock: trio.SocketStream) -> None:
    """A stand-in RPC server: reads until the client half-closes, then sends it all back reversed, and closes.

    One direction at a time, like llama.cpp's request/response RPC. (An echo that saturates both directions of one
    libp2p connection at once can deadlock py-libp2p 0.8.1's yamux: each side's reader blocks writing a ping ACK
    behind a data write that waits for the other side's blocked reader.)
    """
    async with sock:
        received = bytearray()
        while data := await sock.receive_some(1 << 20):
            received += data
        await sock.send_all(bytes(reversed(received)))


async def test_the_bridge_copies_and_counts_every_byte_both_ways() -> None:
    payload = bytes(range(256)) * (32 * 1024)  # 8 MiB
    async with network() as net:
        listeners = await net.nursery.start(functools.partial(trio.serve_tcp, _answer_after_eof, 0, host=LOOPBACK_HOST))
        stand_in_port = int(listeners[0].socket.getsockname()[1])

        async def rpc_port() -> int:
            return stand_in_port

        worker = await net.start_overlay()
        host = await net.start_overlay(bootstrap=(worker.overlay.addrs()[0],))
        server = RpcTunnelServer(worker.overlay, is_member=lambda p: True, rpc_port=rpc_port)
        server.install()
        bridge = RpcTunnelClient(host.overlay)
        port = await net.nursery.start(functools.partial(bridge.serve_port, worker.overlay.peer_id))

        local = await trio.open_tcp_stream(LOOPBACK_HOST, port)
        received = bytearray()
        with trio.fail_after(60):
            start = trio.current_time()
            await local.send_all(payload)
            await local.send_eof()  # passed on as a half-close: the stand-in answers, then closes
            while data := await local.receive_some(1 << 20):
                received += data
            seconds = trio.current_time() - start
        await local.aclose()
        assert received == bytes(reversed(payload))
        await wait_for(lambda: bridge.active == 0 and server.active == 0, "both ends to close the tunnel")
        n = len(payload)
        assert (bridge.bytes_to_rpc, bridge.bytes_from_rpc, server.bytes_to_rpc, server.bytes_from_rpc) == (n,) * 4
        assert bridge.connections == server.connections == 1 and bridge.refused == server.refused == 0
        # 8 MiB in many chunks, then the answer: one round trip, however the bytes were cut.
        assert bridge.round_trips == server.round_trips == 1
        print(f"rpc bridge: {2 * n / seconds / 1e6:.1f} MB/s (8 MiB each way, one after the other, one process)")


async def test_a_worker_without_an_rpc_server_refuses_and_the_host_hangs_up() -> None:
    async def no_rpc_server() -> int:
        raise OSError("ggml-rpc-server did not start")

    async with network() as net:
        worker = await net.start_overlay()
        host = await net.start_overlay(bootstrap=(worker.overlay.addrs()[0],))
        server = RpcTunnelServer(worker.overlay, is_member=lambda p: True, rpc_port=no_rpc_server)
        server.install()
        stream = await host.overlay.host.new_stream(worker.overlay.peer_id, [RPC_PROTOCOL])
        await stream.write(encode_hello(RpcHello()))
        reply = await _read_reply(stream)
        assert (reply.ok, reply.error) == (False, "rpc_unavailable")
        await stream.close()

        bridge = RpcTunnelClient(host.overlay)
        port = await net.nursery.start(functools.partial(bridge.serve_port, worker.overlay.peer_id))
        local = await trio.open_tcp_stream(LOOPBACK_HOST, port)
        with trio.fail_after(5):
            assert await local.receive_some(16) == b""
        await local.aclose()
        assert bridge.refused == 1 and server.refused == 2
        assert worker.overlay.rejects.as_dict() == {"rpc:rpc_unavailable": 2}


async def test_the_rpc_server_is_restarted_after_a_crash_and_reaped_when_cancelled(
    tmp_path: Path, llama_binaries: LlamaBinaries
) -> None:
    rpc = RpcServer(llama_binaries, log_dir=tmp_path, threads=1, cache=False)
    assert rpc.command(5)[1:] == ["-H", "127.0.0.1", "-p", "5", "-t", "1"]
    async with trio.open_nursery() as nursery:
        port = await nursery.start(rpc.run)
        first_pid = rpc.pid
        assert first_pid is not None and rpc.state is BackendState.READY and port == rpc.port
        os.kill(first_pid, signal.SIGKILL)
        await wait_for(lambda: rpc.state is BackendState.READY and rpc.pid != first_pid, "a restarted RPC server")
        assert rpc.restarts == 1 and await rpc.wait_ready() == rpc.port
        second_pid, second_port = rpc.pid, rpc.port
        assert second_pid is not None and second_port is not None
        (await trio.open_tcp_stream(LOOPBACK_HOST, second_port)).socket.close()
        nursery.cancel_scope.cancel()
    assert rpc.state is BackendState.STOPPED and rpc.pid is None
    assert not pid_alive(first_pid) and not pid_alive(second_pid)
    assert port_is_free(port) and port_is_free(second_port)
    assert "-H 127.0.0.1" in (tmp_path / "ggml-rpc-server.log").read_text()


async def test_a_worker_with_the_model_loads_its_weights_from_its_own_file(
    tmp_path: Path, llama_binaries: LlamaBinaries
) -> None:
    """With `gguf_paths` the worker's RPC server (patch 0001) reads every weight from its own copy: the host sends
    none, at first load or at reload, and the answer is the solo one."""
    from meshp2p.inference.rpc_server import supports_local_gguf

    assert llama_binaries.rpc_server is not None and supports_local_gguf(llama_binaries.rpc_server), \
        "ggml-rpc-server lacks --gguf: rebuild llama.cpp with vendor/llama.cpp/build.sh (patch 0001)"
    model = write_tiny_gguf(tmp_path / "tiny-dense.gguf", "dense", layers=LAYERS, seed=11)
    solo, _, _ = await run_llama_server(llama_binaries, model, tmp_path / "solo.log")
    rpc = RpcServer(llama_binaries, log_dir=tmp_path, threads=1, cache_dir=tmp_path / "rpc-cache",
                    gguf_paths=lambda: [model])
    assert rpc.command(5)[-2:] == ["--gguf", str(model)]
    on_demand = OnDemandRpcServer(rpc)
    loads: list[int] = []
    async with network() as net:
        worker = await net.start_overlay()
        host = await net.start_overlay(bootstrap=(worker.overlay.addrs()[0],))
        await net.nursery.start(on_demand.run)
        server = RpcTunnelServer(worker.overlay, is_member=lambda p: p == host.overlay.peer_id,
                                 rpc_port=on_demand.port)
        server.install()
        bridge = RpcTunnelClient(host.overlay)
        bridge_port = await net.nursery.start(
            functools.partial(bridge.serve_port, worker.overlay.peer_id, model="tiny-dense", threads=1))
        for attempt in ("first", "reload"):
            before = bridge.bytes_to_rpc

            async def mark(stage: str, before: int = before) -> None:
                if stage == "loaded":
                    await wait_for(lambda: bridge.bytes_to_rpc == server.bytes_to_rpc, "both ends to agree")
                    loads.append(bridge.bytes_to_rpc - before)

            split, _, _ = await run_llama_server(llama_binaries, model, tmp_path / f"split-{attempt}.log",
                                                 *split_flags(bridge_port), during=mark)
            assert split["tokens"] == solo["tokens"]
        await wait_for(lambda: bridge.active == 0 and server.active == 0, "llama-server's RPC connections to end")
    rpc_log = (tmp_path / "ggml-rpc-server.log").read_text()
    assert "local gguf: index ready, 57 tensors" in rpc_log and "loaded from local files" in rpc_log
    # Stock, this load sends ~663 KB, ~560 KB of it weights; what is left is protocol: the warm-up graphs,
    # alloc-size queries, activations and one 321-byte hash offer per weight (~104 KB).
    assert all(load < 150_000 for load in loads), loads
    print("rpc bytes at load with local gguf:", loads)


async def test_a_file_offered_after_the_rpc_server_started_is_read_from_disk_at_the_next_split(
    tmp_path: Path, llama_binaries: LlamaBinaries, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recruited worker (app/recruitment.py) fetches the host's file while its RPC server already runs (it served
    a split before): the next split connection restarts the server with the new file among its `--gguf` files, so
    that load sends no weights (the first one, before the file was there, sent them all)."""
    model = write_tiny_gguf(tmp_path / "tiny-dense.gguf", "dense", layers=LAYERS, seed=11)
    other = write_tiny_gguf(tmp_path / "tiny-other.gguf", "dense", layers=LAYERS, seed=12)
    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path / "home"))  # the worker's RPC cache (tensor indexes) goes there
    solo, _, _ = await run_llama_server(llama_binaries, model, tmp_path / "solo.log")
    offered = OfferedModels([spec_from_gguf(other)])
    loads: list[int] = []
    async with network() as net:
        worker = await net.start_overlay()
        host = await net.start_overlay(bootstrap=(worker.overlay.addrs()[0],))
        pipeline = PipelineWorker(llama_binaries, worker.overlay, is_member=lambda p: p == host.overlay.peer_id,
                                  gguf_paths=offered.paths, threads=1, log_dir=tmp_path)
        await net.nursery.start(pipeline.run)
        rpc = pipeline.rpc.server
        bridge = RpcTunnelClient(host.overlay)
        bridge_port = await net.nursery.start(
            functools.partial(bridge.serve_port, worker.overlay.peer_id, model="tiny-dense", threads=1))

        async def split_load(name: str) -> None:
            before = bridge.bytes_to_rpc

            async def mark(stage: str) -> None:
                if stage == "loaded":
                    await wait_for(lambda: bridge.bytes_to_rpc == pipeline.bridge.bytes_to_rpc, "both ends to agree")
                    loads.append(bridge.bytes_to_rpc - before)

            split, _, _ = await run_llama_server(llama_binaries, model, tmp_path / f"split-{name}.log",
                                                 *split_flags(bridge_port), during=mark)
            assert split["tokens"] == solo["tokens"]
            await wait_for(lambda: bridge.active == 0 and pipeline.bridge.active == 0, "the RPC connections to end")

        await split_load("without-the-file")
        first_pid = rpc.pid
        assert rpc.started_with == (str(other),) and not rpc.stale()
        offered.add(spec_from_gguf(model))  # what Recruitment does once the fetched file passed its checks
        assert rpc.stale() and rpc.pid == first_pid, "nothing restarts before a split asks"
        await split_load("with-the-file")
        assert rpc.pid != first_pid and rpc.restarts == 0 and not rpc.stale()
        assert rpc.started_with == (str(other), str(model))
    rpc_log = (tmp_path / "ggml-rpc-server.log").read_text()
    assert f"local gguf     : {model}" in rpc_log and "loaded from local files" in rpc_log
    assert loads[0] > 400_000 and loads[1] < 150_000, loads
    print("rpc bytes at load, before and after the file arrived:", loads)
