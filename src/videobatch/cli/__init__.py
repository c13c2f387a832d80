"""The command line: ``python -m videobatch PROMPTS.csv`` (``main``) and the sub-commands on a
checkpoint (``commands``)."""

from .main import main

__all__ = ["main"]
