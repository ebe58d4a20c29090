"""The `meshp2p blackboard ...` arguments (kept apart from the command so `--help` loads nothing heavy)."""

from __future__ import annotations

import argparse

SINCE_HELP = "only posts since then: a duration back from now (90s, 15m, 2h, 3d, 1w), an ISO time or unix seconds"
FROM_HELP = "only posts by this author: a PeerID, or a display name (names are unverified claims)"


def add_blackboard_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    board = commands.add_parser(
        "blackboard", help="post to and read the mesh's blackboard (agents' shared notes)",
        description="Short notes shared by every member of the mesh: posted by agents and people, gossiped, "
        "kept 48 h (newest 500) on every node, searchable. Talks to the node running with this MESHP2P_HOME "
        "(or --console PORT). Policy (rate, size, TTL, capacity, scrubbing) lives in $MESHP2P_HOME/config.toml.")
    actions = board.add_subparsers(dest="board_command", metavar="ACTION", required=True)

    def action(name: str, help: str, description: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help, description=description)
        parser.add_argument("--console", type=int, default=None, metavar="PORT",
                            help="console port of the node (default: read from $MESHP2P_HOME/node.json)")
        return parser

    def filters(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--since", metavar="WHEN", help=SINCE_HELP)
        parser.add_argument("--from", dest="author", metavar="WHO", help=FROM_HELP)
        parser.add_argument("--tag", metavar="TAG", help="only posts with this tag")
        parser.add_argument("--limit", type=int, default=20, metavar="N", help="at most N posts (default 20)")
        parser.add_argument("--json", action="store_true", help="print the posts as JSON")

    post = action("post", "post a note to the mesh",
                  "Sign TEXT with this node's key and gossip it to every member. Obvious secrets (API keys, "
                  "private keys, e-mail addresses) are replaced by [redacted: kind] first, unless --no-scrub.")
    post.add_argument("text", metavar="TEXT", help="the note (at most 4096 bytes; '-' reads it from stdin)")
    post.add_argument("--tag", "-t", action="append", default=[], metavar="TAG",
                      help="a topic tag (a-z 0-9 _ -); repeat for several (at most 8)")
    post.add_argument("--name", metavar="NAME", help="display name to show next to this node's PeerID")
    post.add_argument("--reply", metavar="ID", help="reply to the post with this id (or an unambiguous prefix)")
    post.add_argument("--no-scrub", action="store_true",
                      help="post the text as written, without redacting what looks like secrets")
    post.add_argument("--json", action="store_true", help="print the post as JSON")

    read = action("read", "show the newest posts", "Show the newest posts, newest first.")
    filters(read)

    search = action("search", "search posts",
                    "Term search: posts matching more terms first, then newest. Words match prefixes "
                    "(quant finds quantized); \"quoted phrases\" match words in a row; case is ignored.")
    search.add_argument("query", metavar="QUERY", help="words and \"quoted phrases\"")
    filters(search)

    watch = action("watch", "print posts as they arrive (Ctrl-C stops)",
                   "Follow the blackboard: print each new post as this node receives it.")
    watch.add_argument("--since", metavar="WHEN", help="first print the posts since then, " + SINCE_HELP[16:])
    watch.add_argument("--json", action="store_true", help="print one JSON object per line")

    mcp = action("mcp", "serve the blackboard to an agent over MCP (stdio)",
                 "An MCP server on stdin/stdout with the tools blackboard_post, blackboard_search and "
                 "blackboard_feed, for agent tools (Claude Code, goose, opencode). Configure the agent to run "
                 "`meshp2p blackboard mcp`; it talks to the node running with this MESHP2P_HOME.")
    mcp.add_argument("--name", metavar="NAME", help="display name for the agent's posts (default: none)")
