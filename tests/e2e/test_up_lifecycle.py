"""`meshp2p up` as a user runs it: Ctrl-C stops everything; bad flags and busy ports give clear errors."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
from helpers.processes import clean_environ, pid_alive, port_is_free, wait_for

from meshp2p.wire.model_id import content_id_of


def run_meshp2p(*args: str, home, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "meshp2p", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean_environ(), "MESHP2P_HOME": str(home), "COLUMNS": "200"})


def test_ctrl_c_reaps_every_backend_and_frees_every_port(node_factory, tiny_models, llama_binaries):
    node = node_factory("--model", str(tiny_models.dense), "--model", str(tiny_models.other), "--threads", "1")
    status = node.wait_ready()
    pids = [m["pid"] for m in status["models"]]
    ports = [m["port"] for m in status["models"]] + [node.api_port, node.console_port]
    assert all(pid_alive(p) for p in pids)
    assert (node.home / "node.json").is_file()

    assert node.stop() == 0
    assert not any(pid_alive(p) for p in pids)
    assert all(port_is_free(p) for p in ports)
    assert not (node.home / "node.json").exists()
    assert "stopped" in node.output()


def test_unknown_model_is_a_clear_error(tmp_path, llama_binaries):
    r = run_meshp2p("up", "--model", "nope-not-a-model", "--no-build", home=tmp_path)
    assert r.returncode == 1
    assert "model 'nope-not-a-model' not found" in r.stderr
    assert "pass a path to a .gguf file" in r.stderr


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path, llama_binaries):
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"definitely not a model")
    r = run_meshp2p("up", "--model", str(bogus), "--no-build", home=tmp_path)
    assert r.returncode == 1
    assert "is not a readable GGUF file" in r.stderr


def test_busy_api_port_is_a_clear_error_and_leaves_nothing(tmp_path, tiny_models, llama_binaries):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_meshp2p("up", "--model", str(tiny_models.dense), "--port", str(port), "--console", "0",
                        "--no-build", "--threads", "1", home=tmp_path)
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
    assert "--port" in r.stderr
    leftovers = subprocess.run(["pgrep", "-f", str(tiny_models.dense)], capture_output=True, text=True,
                               timeout=30).stdout
    assert leftovers.strip() == ""


def test_missing_binaries_with_no_build_says_how_to_fix(tmp_path):
    # MESHP2P_LLAMA_DIR pointing nowhere is always "missing", whatever the machine has built.
    r = subprocess.run([sys.executable, "-m", "meshp2p", "up", "--no-build"], capture_output=True, text=True,
                       timeout=60, env={**clean_environ(), "MESHP2P_HOME": str(tmp_path),
                                        "MESHP2P_LLAMA_DIR": str(tmp_path / "empty")})
    assert r.returncode == 1
    assert "MESHP2P_LLAMA_DIR" in r.stderr


def test_drop_stops_one_model_and_keeps_the_rest(node_factory, tiny_models, llama_binaries):
    node = node_factory("--model", str(tiny_models.dense), "--model", str(tiny_models.other), "--threads", "1")
    before = {m["id"]: m for m in node.wait_ready()["models"]}

    r = run_meshp2p("drop", "tiny-other", home=node.home)
    assert r.returncode == 0, r.stderr
    after = node.status()
    assert [m["id"] for m in after["models"]] == ["tiny-dense"]
    assert not pid_alive(before["tiny-other"]["pid"])
    assert pid_alive(before["tiny-dense"]["pid"])
    listed = httpx.get(node.base_url + "/models", timeout=10).json()["data"]
    assert [m["id"] for m in listed] == ["tiny-dense"]
    assert after["mesh"]["peers"][0]["available"] == ["tiny-dense"]
    # Each model's file is known by its content id (hashed in the background), and only offered ones are gossiped.
    dense_id = content_id_of(tiny_models.dense.read_bytes()).text
    wait_for(lambda: node.status()["models"][0]["content_id"] == dense_id
             and node.status()["mesh"]["peers"][0]["files"] == {"tiny-dense": dense_id}, 10,
             "the node to show and gossip the content id of tiny-dense only")

    r = run_meshp2p("drop", "tiny-other", home=node.home)
    assert r.returncode == 1
    assert "does not serve 'tiny-other'" in r.stderr
