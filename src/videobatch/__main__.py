"""``python -m videobatch``: the command line (see ``videobatch.cli.main``)."""

from .cli.main import main

raise SystemExit(main())
