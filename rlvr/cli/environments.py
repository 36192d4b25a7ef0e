"""The ``rlvr environments`` command: what environments, tools and tool-call parsers exist.

``cmd_environments`` returns the process exit code (1 when a plugin cannot be loaded).
"""
from __future__ import annotations

import argparse
import sys

from rlvr.environments.base import EnvironmentConfigError
from rlvr.environments.parsers import list_parsers
from rlvr.environments.registry import list_environments, list_tools, load_environment_plugins


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", metavar="MODULE_OR_PATH",
                        help="environment plugin module or .py file to import (repeatable)")


def cmd_environments(args: argparse.Namespace) -> int:
    """Print the tables of registered environments, tools and parsers (built-ins and plugins)."""
    from rich.console import Console
    from rich.table import Table
    try:
        load_environment_plugins(getattr(args, "plugin", None) or [])
    except EnvironmentConfigError as e:
        print(f"rlvr: error: {e}", file=sys.stderr)
        return 1
    console = Console()
    for title, rows in (("environments", list_environments()), ("tools", list_tools())):
        table = Table(title=title)
        for col in ("name", "description", "source"):
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    table = Table(title="tool-call parsers")
    table.add_column("name")
    table.add_column("syntax", overflow="fold")
    for name, syntax in list_parsers():
        table.add_row(name, syntax)
    console.print(table)
    return 0


# --------------------------------------------------------------------------- the command

def add_parsers(sub) -> None:
    from rlvr.cli.environments import add_arguments as environments_arguments
    from rlvr.cli.environments import cmd_environments

    le = sub.add_parser("environments", help="list registered environments, tools and tool-call parsers")
    environments_arguments(le)
    le.set_defaults(fn=cmd_environments)
