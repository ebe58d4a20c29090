"""How one request reaches a model: the local llama-server, or a peer through the HTTP tunnel.

Sits between `api/` (HTTP serving) and the layers that run models or talk to peers; routing policy stays in
`mesh/routing.py`.
"""
