"""The web console in a real browser: headless chromium (Debian's, driven by Playwright) on the page that node A of
a two-node private mesh serves at `/`, the nodes real `meshp2p up` processes on loopback.

A serves tiny-dense with API keys on; B joined with A's invite token and serves tiny-other. The tests share the
mesh and run in order; the last one kills B.

- the page asks for a key, keeps it, and then shows the invite token; the topology shows both nodes and their models;
- a chat message streams an answer into the page (tokens appear, tokens/s shown); Stop ends a stream; an API
  error is shown as one, with the API's message;
- a post made on A with the CLI appears on B's console without a reload; a post made on B's page is found by search;
- every control has an accessible name; the page at phone and desktop width (screenshots in the test's tmp dir,
  and in docs/ with MESHP2P_DOCS_SCREENSHOTS=1);
- a SIGKILLed B leaves A's topology within the mesh's departure time.

No test sleeps: each waits with Playwright's `expect` (or `wait_for`) against a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.browser import chromium_path
from helpers.processes import (
    NODE_STOP_TIMEOUT_S,
    REPO,
    NodeProcess,
    TinyModels,
    clean_environ,
    pid_alive,
    start_node,
    stop_all,
    wait_for,
)
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

#: The tests post faster than the default 10 posts a minute.
CONFIG = "[blackboard]\nrate_per_min = 600\n"
JOIN_TIMEOUT_S = 60.0
#: The page shows a state change once the node's event stream carries it (within 200 ms), and renders it at the
#: next frame; this bounds both on a loaded 2-core machine.
SHOWN_TIMEOUT_S = 10.0
#: A stopped node leaves the views within DEPARTURE_LIMIT_S (tests/e2e/test_mesh_processes.py); the page shows it
#: one event (200 ms) and a frame later. The margin is for the loaded 2-core machine.
DEPARTURE_LIMIT_S = 2.5
DEPARTED_SHOWN_S = DEPARTURE_LIMIT_S + 2.5
#: A post reaches another member in ~20 ms (tools/bench/blackboard_latency.py).
ARRIVAL_TIMEOUT_S = 10.0
CHAT_TIMEOUT_S = 60.0
DESKTOP = {"width": 1280, "height": 800}
#: A model no node of the mesh serves (the chat's error case).
UNSERVED = "qwen2.5-7b-instruct"
PHONE = {"width": 390, "height": 844}
DOCS = REPO / "docs"


def meshp2p(home: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "meshp2p", *args], capture_output=True, text=True, timeout=60,
                       env={**clean_environ(), "MESHP2P_HOME": str(home), "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModels, llama_binaries: Any
         ) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("console-mesh")
    nodes: list[NodeProcess] = []
    try:
        for name in ("a", "b"):
            (root / name).mkdir()
            (root / name / "config.toml").write_text(CONFIG)
        key = json.loads(meshp2p(root / "a", "keys", "create", "--json", "--name", "console"))["key"]
        a = start_node(root / "a", "--model", str(tiny_models.dense), "--threads", "1", "--ctx-size", "2048")
        nodes.append(a)
        a.wait_ready()
        token = meshp2p(a.home, "invite").strip()
        b = start_node(root / "b", "--model", str(tiny_models.other), "--threads", "1", "--ctx-size", "2048",
                       "--join", token)
        nodes.append(b)
        b.wait_ready()
        ids = {n.status()["mesh"]["peer_id"] for n in nodes}
        wait_for(lambda: all({p["peer_id"] for p in n.status()["mesh"]["peers"]} == ids for n in nodes),
                 JOIN_TIMEOUT_S, "both nodes in each view")
        wait_for(lambda: set(a.status()["mesh"]["served"]) == {"tiny-dense", "tiny-other"}, JOIN_TIMEOUT_S,
                 "both models served in A's view")
        yield {"a": a, "b": b, "key": key, "a_id": a.status()["mesh"]["peer_id"],
               "b_id": b.status()["mesh"]["peer_id"]}
    finally:
        stop_all(nodes)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Any]:
    """`open_page(node, viewport=..., key=...)`: a fresh browser context on the node's console; the page's script
    errors fail the test."""
    contexts = []
    errors: list[str] = []

    def opener(node: NodeProcess, *, viewport: dict[str, int] = DESKTOP, key: str | None = None,
               scheme: str = "light") -> Page:
        context = browser.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
        contexts.append(context)
        if key is not None:  # as if the user had saved it before
            context.add_init_script(f"localStorage.setItem('meshp2p.apiKey', {json.dumps(key)})")
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # Shown with a failing test's output: what the browser said (refused requests, CSP reports).
        page.on("console", lambda message: print(f"browser {message.type}: {message.text}"))
        page.goto(node.console_url + "/")
        expect(page.locator("#connection")).to_have_text("live", timeout=SHOWN_TIMEOUT_S * 1000)
        return page

    try:
        yield opener
    finally:
        for context in contexts:
            context.close()
    assert not errors, f"the page threw: {errors}"


def node_card(page: Page, peer_id: str) -> Any:
    return page.locator(f'#topology li.node[data-peer="{peer_id}"]')


def test_the_page_asks_for_a_key_then_shows_the_invite_and_both_nodes(mesh: dict[str, Any], open_page: Any) -> None:
    page = open_page(mesh["a"])
    timeout = SHOWN_TIMEOUT_S * 1000
    key_box = page.get_by_label("This node asks for API keys")
    expect(key_box).to_be_visible(timeout=timeout)
    expect(page.locator("#invite-note")).to_contain_text("API key", timeout=timeout)
    key_box.fill(mesh["key"])
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_label("Invite token")).to_have_value(re.compile(r"^mp1\S{40,}$"), timeout=timeout)
    assert page.evaluate("localStorage.getItem('meshp2p.apiKey')") == mesh["key"]

    a, b = node_card(page, mesh["a_id"]), node_card(page, mesh["b_id"])
    expect(a).to_contain_text("tiny-dense", timeout=timeout)
    expect(b).to_contain_text("tiny-other", timeout=timeout)
    expect(a.locator(".badge")).to_have_text("you")
    expect(b).to_contain_text("RTT")
    expect(a.get_by_role("meter")).to_have_count(1)
    expect(page.locator("#topology-map .spot")).to_have_count(2)
    expect(page.locator('#models li[data-model="tiny-other"]')).to_contain_text("served by")
    expect(page.locator("#mesh-facts")).to_contain_text("private")


def test_a_chat_streams_an_answer_with_its_rate(mesh: dict[str, Any], open_page: Any) -> None:
    page = open_page(mesh["a"], key=mesh["key"])
    picker = page.get_by_role("combobox", name="Model")
    expect(picker.locator("option")).to_have_count(2, timeout=SHOWN_TIMEOUT_S * 1000)
    picker.select_option("tiny-other")  # served by B: the answer comes through the mesh's tunnel
    page.get_by_role("spinbutton", name="Max tokens").fill("48")
    page.get_by_role("textbox", name="Message").fill("Tell me about meshes.")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#chat-log li.assistant .text")
    expect(answer).not_to_be_empty(timeout=CHAT_TIMEOUT_S * 1000)
    expect(page.get_by_role("button", name="Send")).to_be_enabled(timeout=CHAT_TIMEOUT_S * 1000)
    expect(page.locator("#chat-rate")).to_have_text(re.compile(r"^\d+ tokens? · \d+(\.\d)? tok/s · first token"))
    expect(page.locator("#chat-log li.assistant.failed")).to_have_count(0)

    # Stop ends a stream the user no longer wants: on a throttled network (a few hundred bytes a second) a long
    # answer is still streaming when the first token is shown, so the click lands mid-stream.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": 400,
                                                  "uploadThroughput": -1})
    page.get_by_role("button", name="New chat").click()
    page.get_by_role("spinbutton", name="Max tokens").fill("1500")
    page.get_by_role("textbox", name="Message").fill("Tell me everything.")
    page.get_by_role("button", name="Send").click()
    expect(answer).not_to_be_empty(timeout=CHAT_TIMEOUT_S * 1000)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#chat-log li.assistant.stopped")).to_have_count(1, timeout=SHOWN_TIMEOUT_S * 1000)
    expect(page.locator("#chat-rate")).to_contain_text("stopped")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})

    # An error answer shows the API's own message: ask for a model nobody serves (the models card then lists it as
    # wanted, as the screenshots show).
    page.evaluate("""(id) => { const o = document.createElement('option'); o.value = o.textContent = id;
                               document.getElementById('chat-model').append(o); }""", UNSERVED)
    picker.select_option(UNSERVED)
    page.get_by_role("textbox", name="Message").fill("anyone?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#chat-log li.assistant.failed [role=alert]")).to_contain_text(
        UNSERVED, timeout=CHAT_TIMEOUT_S * 1000)


def test_a_post_on_a_appears_on_b_without_a_reload(mesh: dict[str, Any], open_page: Any) -> None:
    page = open_page(mesh["b"])
    posted = json.loads(meshp2p(mesh["a"].home, "blackboard", "post", "spare 3090 free tonight, ask me",
                                "--tag", "gpu", "--json"))
    post = page.locator(f'#board-feed li[data-id="{posted["post"]["id"]}"]')
    expect(post).to_contain_text("spare 3090 free tonight", timeout=ARRIVAL_TIMEOUT_S * 1000)
    expect(post).to_contain_text("#gpu")

    page.get_by_role("textbox", name="New post").fill("benchmarks done: 27 tok/s on the tiny model")
    page.get_by_role("button", name="Post", exact=True).click()
    expect(page.locator("#board-note")).to_have_text("posted", timeout=SHOWN_TIMEOUT_S * 1000)
    page.get_by_role("searchbox", name="Search posts").fill("benchmarks tiny")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#board-feed li.post")).to_have_count(1, timeout=SHOWN_TIMEOUT_S * 1000)
    expect(page.locator("#board-feed")).to_contain_text("27 tok/s")
    expect(page.locator("#log li").first).to_be_visible()  # the node's recent log lines


def test_every_control_has_a_name_and_the_page_fits_a_phone_and_a_desktop(
        mesh: dict[str, Any], open_page: Any, tmp_path: Path) -> None:
    shots = {}
    for name, viewport, scheme in (("desktop", DESKTOP, "light"), ("phone", PHONE, "dark")):
        page = open_page(mesh["a"], viewport=viewport, key=mesh["key"], scheme=scheme)
        expect(node_card(page, mesh["b_id"])).to_contain_text("tiny-other", timeout=SHOWN_TIMEOUT_S * 1000)
        expect(page.get_by_label("Invite token")).to_have_value(re.compile("^mp1"), timeout=SHOWN_TIMEOUT_S * 1000)
        expect(page.locator("#idle")).to_be_hidden()  # a node runs: no "what to run" card
        for role in ("button", "textbox", "combobox", "searchbox", "spinbutton", "meter"):
            for control in page.get_by_role(role).all():
                expect(control).to_have_accessible_name(re.compile(r"\S"))
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: the page is {overflow} px wider than the window"
        columns = page.evaluate("new Set([...document.querySelectorAll('main > .card')]"
                                ".filter(c => c.getClientRects().length)"  # shown cards only (idle's is hidden)
                                ".map(c => Math.round(c.getBoundingClientRect().left))).size")
        assert (columns == 1) == (name == "phone"), f"{name}: cards in {columns} columns"
        shots[name] = tmp_path / f"console-{name}.png"
        page.screenshot(path=str(shots[name]), full_page=name == "desktop")
    if os.environ.get("MESHP2P_DOCS_SCREENSHOTS"):
        DOCS.mkdir(exist_ok=True)
        for shot in shots.values():
            shutil.copyfile(shot, DOCS / shot.name)


def test_a_killed_node_leaves_the_topology(mesh: dict[str, Any], open_page: Any) -> None:
    page = open_page(mesh["a"], key=mesh["key"])
    b = mesh["b"]
    expect(node_card(page, mesh["b_id"])).to_be_visible(timeout=SHOWN_TIMEOUT_S * 1000)
    children = [m["pid"] for m in b.status()["models"] if m["pid"]]
    b.process.send_signal(signal.SIGKILL)
    b.process.wait(NODE_STOP_TIMEOUT_S)
    expect(node_card(page, mesh["b_id"])).to_have_count(0, timeout=DEPARTED_SHOWN_S * 1000)
    expect(page.locator("#topology-map .spot")).to_have_count(1)
    expect(node_card(page, mesh["a_id"])).to_be_visible()
    # Its llama-server gets SIGKILL from the kernel with its parent (PR_SET_PDEATHSIG).
    wait_for(lambda: not any(pid_alive(pid) for pid in children), 10, "B's llama-server to die with B")


def test_dropping_a_model_from_the_page_stops_it_here(mesh: dict[str, Any], open_page: Any) -> None:
    """The last test of the module: A stops serving its model. The page asks first (a dismissed dialog drops
    nothing), then the console's drop endpoint stops the llama-server and the page shows the model gone."""
    a = mesh["a"]
    page = open_page(a, key=mesh["key"])
    drop = page.get_by_role("button", name="Drop tiny-dense from this node")
    expect(drop).to_be_visible(timeout=SHOWN_TIMEOUT_S * 1000)
    page.once("dialog", lambda dialog: dialog.dismiss())
    drop.click()
    assert [m["id"] for m in a.status()["models"]] == ["tiny-dense"], "a dismissed dialog drops nothing"
    page.once("dialog", lambda dialog: dialog.accept())
    drop.click()
    expect(drop).to_have_count(0, timeout=SHOWN_TIMEOUT_S * 1000)  # no longer this node's to drop
    assert a.status()["models"] == []
    expect(page.locator(f'#topology li[data-peer="{mesh["a_id"]}"] .chip.served')).to_have_count(0)
