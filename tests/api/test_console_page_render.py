"""The console's page in headless chromium on canned data: its files as the package ships them, its API answers
and its event stream (protocols/console-events.md) made up here and handed to the browser by Playwright's
routing, so states a two-node loopback mesh never reaches (a split, a wanted model, GPU readings, refusals, a
hostile post) are shown and checked in a second, with no node running. tests/e2e/test_console_browser.py runs the
page against real nodes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.browser import chromium_path
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from meshp2p.api.console_page import CONTENT_TYPES, page_files

ORIGIN = "http://console.test"
SELF = "12D3KooWSelfSelfSelfSelfSelfSelfSelfSelfSelfAAAA1111"
WORKER = "12D3KooWWorkWorkWorkWorkWorkWorkWorkWorkWorkBBBB2222"
SHOWN_MS = 5000
HOSTILE = '<img src=x onerror="window.pwned = 1"> **not markup**'


def peer(peer_id: str, **facts: Any) -> dict[str, Any]:
    return {"peer_id": peer_id, "self": peer_id == SELF, "role": "host", "region": "AU", "ram_mb": 16384,
            "vram_mb": 0, "gpu": None, "loaded": [], "available": [], "files": {}, "load": 0.0, "version": "0.1.0",
            "last_seen_s": 0.5, "rtt_ms": None, "loading": [], **facts}


NODE = {"version": "0.1.0", "pid": 1, "started_at": 0, "api_url": "http://127.0.0.1:9337/v1",
        "console_url": ORIGIN, "home": "/home/u/.meshp2p", "llama_cpp": None, "max_vram_gb": None, "role": "host",
        "api_keys": False}
VIEW = {
    "mesh_id": "ab" * 16, "nodes": 2, "clients": 0, "served": ["big-model", "small-model"], "capacity_mb": 40960,
    "peers": [
        peer(SELF, vram_mb=24576, gpu="RTX 3090", loaded=["small-model", "big-model"], load=2.0,
             available=["small-model", "big-model"], files={"small-model": "sha256_128:" + "0" * 32 + ":2147483648"}),
        peer(WORKER, role="worker", rtt_ms=3.4, loading=["small-model"], available=["big-model"]),
    ],
    "name": None, "private": True, "listed": False, "created": True, "region": "AU", "max_clients": None,
    "peer_id": SELF, "addrs": [f"/ip4/127.0.0.1/tcp/4001/p2p/{SELF}"], "members": [WORKER],
    "rejected": {"blackboard:rate_limited": 3, "status:bad_signature": 1}, "demand": {}, "wanted": [],
}
DEMAND = {"demand": {"small-model": 12.5, "wanted-model": 3.0}, "wanted": ["wanted-model"]}
MODELS = [{"id": "small-model", "state": "ready", "size_bytes": 2 ** 31, "load_progress": 1.0, "embeddings": False,
           "last_error": None}]
SPLITS = {"splits": [{"model": "big-model", "content_id": None, "other_files": {}, "last_error": None,
                      "plan": [{"peer_id": SELF, "first_layer": 0, "last_layer": 19},
                               {"peer_id": WORKER, "first_layer": 20, "last_layer": 31}],
                      "bytes_to_workers": 0, "bytes_from_workers": 0}], "rpc_worker": None,
          "moe_shards": [{"model": "qwen3-30b-a3b", "content_id": None, "calibration": "imatrix", "usage": "imatrix:00",
                          "min_fraction": 0.5, "core": [], "refused": [], "serving": True, "last_error": None,
                          "members": [{"peer_id": SELF, "experts_per_layer": 96, "experts": [],
                                       "traffic_share": 0.62, "shard_bytes": 1},
                                      {"peer_id": WORKER, "experts_per_layer": 80, "experts": [],
                                       "traffic_share": 0.38, "shard_bytes": 1}]}]}
HARDWARE = {"sampled_at": time.time(), "cpu_pct": 12.0, "ram_used_mb": 3000.0, "ram_total_mb": 16000.0,
            "gpu_tool": "nvidia-smi", "gpus": [{"index": 0, "name": "RTX 3090", "utilization_pct": 43.0,
                                                "vram_used_mb": 10240.0, "vram_total_mb": 24576.0,
                                                "temperature_c": 61.0}]}
POST = {"id": "ab12", "author": WORKER, "name": "mallory", "ts": 1_700_000_000_000, "time": "2023-11-14T22:13:20Z",
        "text": HOSTILE, "tags": ["gpu"], "thread": None}
LOG = {"time": time.time(), "level": "WARNING", "logger": "meshp2p.app.mesh_gossip", "message": "peer left"}


def sse(events: list[tuple[str, Any]]) -> str:
    # A long retry: the canned stream ends, and the browser's reconnect would only replay it.
    frames = [f"id: 0a0b0c0d.{n}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
              for n, (kind, data) in enumerate(events, 1)]
    return "retry: 600000\n\n" + "".join(frames)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def open_console(browser: Browser, events: list[tuple[str, Any]], status: dict[str, Any] | None = None
                 ) -> tuple[Page, list[str]]:
    """The page on ORIGIN with `events` as its stream, and the list its script errors go to."""
    files = page_files()

    def answer(route: Route) -> None:
        path = route.request.url.removeprefix(ORIGIN).split("?")[0]
        name = "index.html" if path == "/" else path.removeprefix("/ui/")
        if path.startswith("/api/events"):
            route.fulfill(status=200, content_type="text/event-stream", body=sse(events))
        elif path == "/api/status":
            route.fulfill(status=200, content_type="application/json", body=json.dumps(status or {}))
        elif path == "/api/blackboard/feed":
            route.fulfill(status=200, content_type="application/json", body=json.dumps({"posts": []}))
        elif path == "/api/logs":
            route.fulfill(status=200, content_type="application/json", body="[]")
        elif path == "/api/invite":
            route.fulfill(status=200, content_type="application/json", body=json.dumps({"token": "mp1canned"}))
        elif name in files:
            route.fulfill(status=200, content_type=CONTENT_TYPES[name[name.rfind("."):]], body=files[name])
        else:
            route.fulfill(status=404, body="")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.route(f"{ORIGIN}/**", answer)
    page.goto(ORIGIN + "/")
    return page, errors


def test_a_split_gpu_readings_demand_and_refusals_are_shown(browser: Browser) -> None:
    events = [("node", NODE), ("view", VIEW), ("demand", DEMAND), ("models", MODELS), ("splits", SPLITS),
              ("blackboard", POST), ("log", LOG)]
    page, errors = open_console(browser, events, status={"hardware": HARDWARE})
    try:
        me = page.locator(f'#topology li[data-peer="{SELF}"]')
        expect(me).to_contain_text("GPU 43% · 61 °C · 10 GB / 24 GB", timeout=SHOWN_MS)
        expect(me).to_contain_text("CPU 12%")
        expect(me).to_contain_text("2 in flight")
        expect(me.get_by_role("meter")).to_have_attribute("aria-valuenow", "2048")
        worker = page.locator(f'#topology li[data-peer="{WORKER}"]')
        expect(worker).to_contain_text("RTT 3.4 ms")
        expect(worker.locator(".chip.loading")).to_have_text("small-model")
        expect(worker.locator(".chip.offered")).to_have_text("big-model")
        expect(worker.locator("[data-hardware]")).to_have_count(0)  # peers do not gossip readings

        layers = page.get_by_role("list", name="layers of big-model").get_by_role("listitem")
        expect(layers).to_have_text(["…AAAA1111 · layers 0–19", "…BBBB2222 · layers 20–31"])
        shards = page.get_by_role("list", name="expert shards of qwen3-30b-a3b").get_by_role("listitem")
        expect(shards).to_have_text(["…AAAA1111 · 96 experts · 62%", "…BBBB2222 · 80 experts · 38%"])
        expect(page.locator("#splits")).to_contain_text("in 2 expert shards · usage by imatrix")
        wanted = page.locator('#models li[data-model="wanted-model"]')
        expect(wanted).to_have_attribute("data-status", "wanted")
        expect(wanted).to_contain_text("3.0 req/min")
        expect(page.locator('#models li[data-model="small-model"]')).to_contain_text("13 req/min")
        expect(page.locator("#rejected")).to_contain_text("blackboard:rate_limited × 3")
        expect(page.locator("#log")).to_contain_text("peer left")
        expect(page.get_by_label("Invite token")).to_have_value("mp1canned")

        post = page.locator('#board-feed li[data-id="ab12"]')
        expect(post.locator(".text")).to_have_text(HOSTILE)  # shown as text, never run or rendered as markup
        expect(page.locator("#board-feed img")).to_have_count(0)
        assert page.evaluate("window.pwned") is None
        assert not errors
    finally:
        page.context.close()


def test_a_node_outside_a_mesh_shows_itself_and_its_models(browser: Browser) -> None:
    loading = {**MODELS[0], "id": "other-model", "state": "loading", "load_progress": 0.4}
    events = [("node", NODE), ("view", None), ("models", [*MODELS, loading]),
              ("splits", {"splits": [], "rpc_worker": None})]
    page, errors = open_console(browser, events)
    try:
        card = page.locator("#topology li.node")
        expect(card).to_have_count(1, timeout=SHOWN_MS)
        expect(card.locator(".chip.served")).to_have_text("small-model")
        expect(card.locator(".chip.loading")).to_have_text("other-model")
        expect(page.locator('#models li[data-model="other-model"]')).to_contain_text("40% loaded")
        expect(page.locator("#mesh-facts")).to_contain_text("none (--solo)")
        expect(page.locator("#invite")).to_be_hidden()
        expect(page.get_by_role("combobox", name="Model").locator("option")).to_have_text(["small-model"])
        assert not errors
    finally:
        page.context.close()
