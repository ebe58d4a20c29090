"""The `meshp2p` command line: one module per command."""
