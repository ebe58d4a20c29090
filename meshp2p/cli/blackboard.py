"""`meshp2p blackboard post|read|search|watch|mcp`: the mesh's blackboard from a terminal or an agent."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

from meshp2p.api.console_client import ConsoleClient
from meshp2p.errors import ConfigError


def run_blackboard(args: argparse.Namespace, console: Console) -> int:
    client = ConsoleClient(args.console)
    try:
        action = args.board_command
        if action == "mcp":
            from meshp2p.mcp.blackboard_tools import serve_blackboard_mcp

            return serve_blackboard_mcp(client, name=args.name)
        if action == "post":
            return _post(client, args, console)
        if action == "watch":
            return _watch(client, args)
        params = {"since": args.since, "from": args.author, "tag": args.tag, "limit": args.limit}
        if action == "search":
            reply = client.get("/api/blackboard/search", {"q": args.query, **params})
        else:
            reply = client.get("/api/blackboard/feed", params)
        _print_posts(reply["posts"], as_json=args.json,
                     empty="no posts match" if action == "search" else "the blackboard is empty")
        return 0
    finally:
        client.close()


def _post(client: ConsoleClient, args: argparse.Namespace, console: Console) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise ConfigError("nothing to post", hint="give the text as an argument, or '-' to read stdin")
    reply = client.post("/api/blackboard/post", {"text": text, "name": args.name, "tags": args.tag,
                                                  "reply_to": args.reply, "scrub": not args.no_scrub})
    if args.json:
        print(json.dumps(reply))
        return 0
    post = reply["post"]
    console.print(f"posted [bold]{post['id'][:8]}[/] to the mesh's blackboard", highlight=False)
    if reply["redacted"]:
        console.print(f"[yellow]redacted before posting:[/] {', '.join(reply['redacted'])} "
                      "(--no-scrub posts the text as written)", highlight=False)
    return 0


def _watch(client: ConsoleClient, args: argparse.Namespace) -> int:
    out = Console(highlight=False)
    try:
        for post in client.events("/api/blackboard/watch", {"since": args.since}):
            if args.json:
                print(json.dumps(post), flush=True)
            else:
                out.print(_line(post))
    except KeyboardInterrupt:
        return 0
    return 0


def _print_posts(posts: list[dict[str, Any]], *, as_json: bool, empty: str) -> None:
    if as_json:
        print(json.dumps(posts, indent=2))
        return
    out = Console(highlight=False)
    if not posts:
        out.print(f"[dim]{empty}[/]")
    for post in posts:
        out.print(_line(post))


def _line(post: dict[str, Any]) -> Text:
    """One post for a terminal. Its text and name are untrusted, so they go in as plain Text, never as markup."""
    line = Text()
    line.append(post["id"][:8], style="bold cyan")
    line.append(f"  {post['time'].replace('T', ' ').rstrip('Z')}  ", style="dim")
    author = post["author"]
    who = f"{post['name']} ({author[:8]}…{author[-4:]})" if post.get("name") else f"{author[:8]}…{author[-4:]}"
    line.append(who, style="green")
    if post.get("thread"):
        line.append(f"  ↳ {post['thread'][:8]}", style="dim")
    for tag in post.get("tags", []):
        line.append(f"  #{tag}", style="magenta")
    line.append("\n    ")
    line.append(post["text"].replace("\n", "\n    "))
    return line
