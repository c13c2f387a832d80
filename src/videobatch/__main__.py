"""``python -m videobatch``: the command line (see ``videobatch.cli``)."""

from .cli import main

raise SystemExit(main())
