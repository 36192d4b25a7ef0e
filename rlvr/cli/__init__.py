"""The `rlvr` command: one file per command group; main.py builds the parser and dispatches."""
from rlvr.cli.main import main

__all__ = ["main"]
