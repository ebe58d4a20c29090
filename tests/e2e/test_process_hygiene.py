"""No llama.cpp process outlives its node: not after a SIGKILL of `meshp2p up`, not after an earlier run's crash.

Real `meshp2p up` processes on the tiny model; the fault (SIGKILL of the node, which runs none of its cleanup)
is repeated ten times in a row with one MESHP2P_HOME, as a crashing machine would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

from helpers.processes import NODE_STOP_TIMEOUT_S, pid_alive, port_is_free, wait_for

KILLS = 10
#: trio's worker threads exit after this long idle (trio/_core/_thread_cache.py IDLE_TIMEOUT).
THREAD_IDLE_S = 10.0
#: PR_SET_PDEATHSIG delivers at once; the bound leaves room for a loaded CI machine.
CHILD_GONE_S = 5.0


def test_children_die_with_a_killed_node_ten_times_in_a_row(node_factory, tiny_models):
    node = node_factory("--model", str(tiny_models.dense), "--solo", "--threads", "1", name="crashy")
    for round_ in range(KILLS):
        status = node.wait_ready()
        model = status["models"][0]
        pid, port = model["pid"], model["port"]
        assert pid_alive(pid), f"round {round_}: llama-server {pid} is not running"
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(NODE_STOP_TIMEOUT_S)
        wait_for(lambda pid=pid: not pid_alive(pid), CHILD_GONE_S, f"round {round_}: llama-server {pid} to die")
        wait_for(lambda port=port: port_is_free(port), CHILD_GONE_S, f"round {round_}: port {port} to be freed")
        node._start(node.api_port, node.console_port)
    node.wait_ready()


def _sleeper() -> subprocess.Popen[bytes]:
    """A process no meshp2p started (its own session: no parent-death signal reaches it)."""
    return subprocess.Popen(["sleep", "300"], start_new_session=True)


def test_up_stops_what_an_earlier_run_left_and_nothing_else(node_factory, tiny_models, tmp_path):
    leftover, stranger = _sleeper(), _sleeper()
    try:
        home = tmp_path / "resumed"
        home.mkdir()
        # As an earlier run would have recorded them: the leftover with its real command line, the stranger's PID
        # with another (the PID was reused by something that is not ours).
        (home / "children.json").write_text(json.dumps({
            str(leftover.pid): ["sleep", "300"],
            str(stranger.pid): ["/opt/llama/llama-server", "--port", "1234"],
        }))
        node = node_factory("--model", str(tiny_models.dense), "--solo", "--threads", "1", name="resumed")
        node.wait_ready()
        wait_for(lambda: leftover.poll() is not None, CHILD_GONE_S, "the leftover to be stopped")
        assert leftover.returncode == -signal.SIGKILL
        assert stranger.poll() is None, "a process whose command line does not match was killed"
        assert f"pid {leftover.pid}" in node.output()
        # While the node runs, the record names exactly its own llama-server.
        record = json.loads((home / "children.json").read_text())
        assert set(record) == {str(node.status()["models"][0]["pid"])}
    finally:
        for process in (leftover, stranger):
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
            process.wait(NODE_STOP_TIMEOUT_S)


def test_a_stopped_node_leaves_no_record(node_factory, tiny_models):
    node = node_factory("--model", str(tiny_models.dense), "--solo", "--threads", "1", name="tidy")
    node.wait_ready()
    assert (node.home / "children.json").exists()
    assert node.stop() == 0
    # The node reaps its children before it exits, and forgets each one it reaped.
    assert json.loads((node.home / "children.json").read_text()) == {}


async def test_a_child_outlives_the_thread_pool_that_would_have_forked_it(tmp_path, monkeypatch):
    """The parent-death signal follows the thread that forked: a child forked in one of trio's worker threads is
    killed when that thread retires after its idle timeout. `spawn` forks on trio's own thread; this child must
    still run after the worker threads that were around at its start have retired."""
    import trio

    from meshp2p.inference.processes import spawn, stop_process

    monkeypatch.setenv("MESHP2P_HOME", str(tmp_path))
    await trio.to_thread.run_sync(lambda: None)  # a worker thread exists now, and will retire when idle
    process = await spawn(["sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        await trio.sleep(THREAD_IDLE_S + 2)  # trio retires idle worker threads after THREAD_IDLE_S
        assert process.returncode is None and pid_alive(process.pid), "the child died with a retired thread"
        assert json.loads((tmp_path / "children.json").read_text()) == {str(process.pid): ["sleep", "60"]}
    finally:
        await stop_process(process)
    assert json.loads((tmp_path / "children.json").read_text()) == {}
