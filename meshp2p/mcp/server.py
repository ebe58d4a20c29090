"""The MCP server core: JSON-RPC 2.0 messages in, responses out, tools dispatched by name.

Sans-IO in the h11 sense: `McpServer.handle` takes one decoded message and returns the response (or None for a
notification); `serve_stdio` only moves newline-delimited JSON between stdin and stdout, as MCP's stdio
transport specifies. Only what a tools-only server needs is implemented: `initialize`, `ping`, `tools/list`,
`tools/call` and the notifications clients send. A tool that fails answers a result with `isError: true`
(the agent sees the message and can act on it), not a protocol error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

from meshp2p.errors import MeshP2PError

log = logging.getLogger(__name__)

#: Newest first; we answer with the client's version when we know it, else our newest.
PROTOCOL_VERSIONS = ("2025-06-18", "2025-03-26", "2024-11-05")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]
    #: arguments → (text for the agent, structured result)
    run: Callable[[dict[str, Any]], tuple[str, Any]]

    def listing(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "inputSchema": self.input_schema}


class McpServer:
    def __init__(self, name: str, version: str, tools: list[Tool], instructions: str | None = None) -> None:
        self.info = {"name": name, "version": version}
        self.tools = {tool.name: tool for tool in tools}
        self.instructions = instructions

    def handle(self, message: Any) -> dict[str, Any] | None:
        """The response to one JSON-RPC message; None for notifications (and responses sent to us)."""
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, "not a JSON-RPC 2.0 message")
        method, msg_id = message.get("method"), message.get("id")
        if not isinstance(method, str):
            return None if "result" in message or "error" in message else _error(msg_id, INVALID_REQUEST,
                                                                                    "no method")
        if "id" not in message:
            return None  # notifications/initialized, notifications/cancelled, ...: nothing to answer
        params = message.get("params") or {}
        if not isinstance(params, dict):
            return _error(msg_id, INVALID_PARAMS, "params must be an object")
        if method == "initialize":
            return _result(msg_id, self._initialize(params))
        if method == "ping":
            return _result(msg_id, {})
        if method == "tools/list":
            return _result(msg_id, {"tools": [tool.listing() for tool in self.tools.values()]})
        if method == "tools/call":
            return self._call(msg_id, params)
        return _error(msg_id, METHOD_NOT_FOUND, f"unknown method {method!r}")

    def _initialize(self, params: dict[str, Any]) -> dict[str, Any]:
        asked = params.get("protocolVersion")
        version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
        result: dict[str, Any] = {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
                                  "serverInfo": self.info}
        if self.instructions:
            result["instructions"] = self.instructions
        return result

    def _call(self, msg_id: Any, params: dict[str, Any]) -> dict[str, Any]:
        tool = self.tools.get(params.get("name", ""))
        if tool is None:
            return _error(msg_id, INVALID_PARAMS, f"unknown tool {params.get('name')!r}")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            return _error(msg_id, INVALID_PARAMS, "arguments must be an object")
        try:
            text, structured = tool.run(arguments)
        except (MeshP2PError, ValueError, TypeError) as exc:
            message = str(exc)
            return _result(msg_id, {"content": [{"type": "text", "text": message}], "isError": True})
        return _result(msg_id, {"content": [{"type": "text", "text": text}], "structuredContent": structured,
                                "isError": False})


def serve_stdio(server: McpServer, stdin: IO[str], stdout: IO[str]) -> None:
    """One JSON message per line in, one per line out, until stdin closes."""
    for line in stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            response: dict[str, Any] | None = _error(None, PARSE_ERROR, f"invalid JSON: {exc}")
        else:
            response = server.handle(message)
        if response is not None:
            stdout.write(json.dumps(response) + "\n")
            stdout.flush()


def _result(msg_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _error(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}
