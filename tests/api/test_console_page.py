"""The console's page as the console app serves it (quart's test client, no port): `/` and its files from the
package, with a policy that runs no inline or foreign script; `POST /api/invite` for this machine only."""

from __future__ import annotations

import re
from typing import Any

from meshp2p.api.console_app import create_console_app
from meshp2p.api.console_page import page_files

LOCAL = {"client": ("127.0.0.1", 50000)}
#: TEST-NET-1: an address in the request scope only, nothing is sent to it.
STRANGER = {"client": ("192.0.2.7", 50000)}


def _status() -> dict[str, Any]:
    return {"node": {"api_url": "http://127.0.0.1:9337/v1"}}


async def _no_drop(model_id: str) -> bool:
    return False


def _app(invite: Any = None) -> Any:
    return create_console_app(_status, _no_drop, None, invite=invite).test_client()


async def test_the_page_and_its_modules_are_served_from_the_package() -> None:
    client = _app()
    page = await client.get("/", scope_base=LOCAL)
    assert page.status_code == 200 and page.content_type.startswith("text/html")
    html = await page.get_data(as_text=True)
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert re.search(r"connect-src 'self' http://[^ ;]+:9337 ", policy), "the model API's port, on the page's host"
    assert "<script" in html and not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "no inline scripts"
    assert "http://" not in html.replace("http://www.w3.org", ""), "nothing loaded from elsewhere"

    files = page_files()
    assert {"index.html", "main.js", "style.css"} <= set(files)
    for name in files:
        r = await client.get(f"/ui/{name}", scope_base=LOCAL)
        assert r.status_code == 200, name
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert (await client.get("/ui/main.js")).content_type.startswith("text/javascript")
    assert (await client.get("/ui/no-such.js")).status_code == 404
    assert (await client.get("/ui/../console_app.py")).status_code == 404


def test_every_module_the_page_imports_ships_with_it() -> None:
    files = page_files()
    wanted = set(re.findall(r'src="/ui/([^"]+)"|href="/ui/([^"]+)"', files["index.html"].decode()))
    names = {a or b for a, b in wanted}
    for name, body in files.items():
        if name.endswith(".js"):
            names |= set(re.findall(r'from "\./([^"]+)"', body.decode()))
    assert names <= set(files), f"missing: {names - set(files)}"


async def test_invites_are_minted_for_this_machine_on_a_private_mesh_only() -> None:
    asked: list[int | None] = []

    def private(ttl_s: int | None) -> str:
        asked.append(ttl_s)
        return "mp1token"

    client = _app(private)
    r = await client.post("/api/invite", scope_base=LOCAL)
    assert r.status_code == 200 and (await r.get_json())["token"] == "mp1token"
    r = await client.post("/api/invite", json={"ttl_hours": 2}, scope_base=LOCAL)
    assert r.status_code == 200 and asked == [None, 7200]
    assert (await client.post("/api/invite", json={"ttl_hours": "soon"}, scope_base=LOCAL)).status_code == 400
    assert (await client.post("/api/invite", scope_base=STRANGER)).status_code == 403
    assert (await client.get("/api/invite", scope_base=LOCAL)).status_code == 405

    public = await _app(lambda ttl_s: None).post("/api/invite", scope_base=LOCAL)
    assert public.status_code == 404 and (await public.get_json())["error"]["code"] == "public_mesh"
    solo = await _app(None).post("/api/invite", scope_base=LOCAL)
    assert solo.status_code == 404 and "--solo" in (await solo.get_json())["error"]["message"]
