"""`python -m meshp2p` is the same as the `meshp2p` command."""

from meshp2p.cli.main import main

raise SystemExit(main())
