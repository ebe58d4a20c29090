"""Mesh policy on plain data: the shared view, discovery scoring, and (later) planning and election."""
