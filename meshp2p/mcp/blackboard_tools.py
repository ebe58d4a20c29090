"""The blackboard as MCP tools: post, search and feed, each one call to the node's console API."""

from __future__ import annotations

import sys
from typing import Any

from meshp2p import __version__
from meshp2p.api.console_client import ConsoleClient
from meshp2p.mcp.server import McpServer, Tool, serve_stdio

INSTRUCTIONS = (
    "The mesh's blackboard: short notes shared by every machine of this meshp2p mesh and the agents on them. "
    "Search it before starting work others may have done; post findings, status and questions (at most 4096 "
    "bytes; obvious secrets are redacted). Posts are public to the mesh and kept for about two days."
)
_FILTERS: dict[str, Any] = {
    "since": {"type": "string", "description": "only posts since then: 90s, 15m, 2h, 3d, 1w or an ISO time"},
    "from": {"type": "string", "description": "only posts by this author (PeerID or display name)"},
    "tag": {"type": "string", "description": "only posts with this tag"},
    "limit": {"type": "integer", "minimum": 1, "maximum": 500, "description": "at most this many (default 20)"},
}


def blackboard_tools(client: ConsoleClient, *, name: str | None = None) -> list[Tool]:
    def post(args: dict[str, Any]) -> tuple[str, Any]:
        text = args.get("text")
        if not isinstance(text, str):
            raise ValueError("'text' (a string) is required")
        reply = client.post("/api/blackboard/post", {"text": text, "tags": args.get("tags", []),
                                                      "reply_to": args.get("reply_to"), "name": name})
        note = f" (redacted: {', '.join(reply['redacted'])})" if reply["redacted"] else ""
        return f"posted {reply['post']['id']}{note}", reply

    def search(args: dict[str, Any]) -> tuple[str, Any]:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ValueError("'query' (a non-empty string) is required")
        reply = client.get("/api/blackboard/search", {"q": query, **_filters(args)})
        return _render(reply["posts"], "no posts match"), reply

    def feed(args: dict[str, Any]) -> tuple[str, Any]:
        reply = client.get("/api/blackboard/feed", _filters(args))
        return _render(reply["posts"], "the blackboard is empty"), reply

    return [
        Tool("blackboard_post", "Post a note to every member of the mesh.", {
            "type": "object", "required": ["text"], "properties": {
                "text": {"type": "string", "description": "the note, at most 4096 bytes"},
                "tags": {"type": "array", "items": {"type": "string"}, "description": "up to 8 of [a-z0-9_-]"},
                "reply_to": {"type": "string", "description": "id (or unambiguous prefix) of a post to reply to"},
            }}, post),
        Tool("blackboard_search", "Search the blackboard: posts matching more terms first, then newest.", {
            "type": "object", "required": ["query"], "properties": {
                "query": {"type": "string", "description": "words (prefixes match) and \"quoted phrases\""},
                **_FILTERS}}, search),
        Tool("blackboard_feed", "The newest posts on the blackboard, newest first.",
             {"type": "object", "properties": dict(_FILTERS)}, feed),
    ]


def serve_blackboard_mcp(client: ConsoleClient, *, name: str | None = None) -> int:
    server = McpServer("meshp2p-blackboard", __version__, blackboard_tools(client, name=name), INSTRUCTIONS)
    serve_stdio(server, sys.stdin, sys.stdout)
    return 0


def _filters(args: dict[str, Any]) -> dict[str, Any]:
    return {"since": args.get("since"), "from": args.get("from"), "tag": args.get("tag"), "limit": args.get("limit")}


def _render(posts: list[dict[str, Any]], empty: str) -> str:
    if not posts:
        return empty
    lines = []
    for p in posts:
        who = f"{p['name']} ({p['author']})" if p.get("name") else p["author"]
        tags = " ".join(f"#{t}" for t in p["tags"])
        reply = f" reply-to {p['thread']}" if p.get("thread") else ""
        lines.append(f"[{p['id']}] {p['time']} {who}{reply} {tags}\n{p['text']}")
    return "\n\n".join(lines)
