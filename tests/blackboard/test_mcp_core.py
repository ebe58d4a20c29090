"""The MCP server core without a process: JSON-RPC shapes, version negotiation, tool errors."""

from __future__ import annotations

import io
import json
from typing import Any

from meshp2p.errors import MeshP2PError
from meshp2p.mcp.server import METHOD_NOT_FOUND, PARSE_ERROR, PROTOCOL_VERSIONS, McpServer, Tool, serve_stdio


def echo(args: dict[str, Any]) -> tuple[str, Any]:
    if "fail" in args:
        raise MeshP2PError("the node is not running", hint="start it")
    return f"echo {args.get('x')}", {"x": args.get("x")}


SERVER = McpServer("test", "0.0", [Tool("echo", "echoes x", {"type": "object"}, echo)])


def call(method: str, params: dict[str, Any] | None = None, msg_id: int = 1) -> dict[str, Any] | None:
    return SERVER.handle({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params or {}})


def test_initialize_echoes_a_known_version_and_offers_ours_otherwise():
    known = call("initialize", {"protocolVersion": "2024-11-05"})
    assert known is not None and known["result"]["protocolVersion"] == "2024-11-05"
    assert known["result"]["capabilities"] == {"tools": {"listChanged": False}}
    unknown = call("initialize", {"protocolVersion": "1999-01-01"})
    assert unknown is not None and unknown["result"]["protocolVersion"] == PROTOCOL_VERSIONS[0]


def test_tools_list_and_call():
    listed = call("tools/list")
    assert listed is not None and [t["name"] for t in listed["result"]["tools"]] == ["echo"]
    result = call("tools/call", {"name": "echo", "arguments": {"x": 3}})
    assert result is not None and result["result"] == {
        "content": [{"type": "text", "text": "echo 3"}], "structuredContent": {"x": 3}, "isError": False}


def test_a_failing_tool_is_a_result_the_agent_reads_not_a_protocol_error():
    result = call("tools/call", {"name": "echo", "arguments": {"fail": True}})
    assert result is not None and result["result"]["isError"] is True
    assert "not running" in result["result"]["content"][0]["text"]


def test_protocol_errors():
    unknown = call("resources/list")
    assert unknown is not None and unknown["error"]["code"] == METHOD_NOT_FOUND
    bad_tool = call("tools/call", {"name": "nope"})
    assert bad_tool is not None and "unknown tool" in bad_tool["error"]["message"]
    assert SERVER.handle({"jsonrpc": "2.0", "method": "notifications/initialized"}) is None
    assert SERVER.handle(["not", "an", "object"])["error"]["code"] == -32600  # type: ignore[index]


def test_stdio_loop_answers_each_line_and_survives_garbage():
    stdin = io.StringIO('{"jsonrpc": "2.0", "id": 7, "method": "ping"}\n\nnot json\n'
                        '{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
    stdout = io.StringIO()
    serve_stdio(SERVER, stdin, stdout)
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert lines[0] == {"jsonrpc": "2.0", "id": 7, "result": {}}
    assert lines[1]["error"]["code"] == PARSE_ERROR
    assert len(lines) == 2
