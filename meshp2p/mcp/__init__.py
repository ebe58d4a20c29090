"""A small Model Context Protocol server (JSON-RPC 2.0 over stdio) exposing the blackboard to agents."""
