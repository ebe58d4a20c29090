"""The two host addresses the node binds, defined once (they were in node.py, inference/ports.py and literals).

meshp2p listens on loopback unless told `--listen-all`: the OpenAI API and the console answer this machine only,
and llama.cpp's children are never reachable from elsewhere (their ports are reached through the mesh's tunnels).
"""

from __future__ import annotations

#: Where every port is bound by default, and the only address llama-server and ggml-rpc-server ever bind.
LOOPBACK_HOST = "127.0.0.1"
#: What `--listen-all` binds the API, the console and the overlay to.
ALL_HOSTS = "0.0.0.0"
