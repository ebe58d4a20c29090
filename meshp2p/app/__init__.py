"""The app layer: the `Node` and its services (mesh, blackboard, pipeline, discovery), wired from the layers below.

Everything here does I/O on behalf of rules that live lower down (`mesh/` decides, `p2p/` talks, `inference/` runs
llama.cpp, `backends/` carries one request); nothing below imports this package (tests/test_layers.py).
"""
