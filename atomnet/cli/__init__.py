"""Command line: ``atomnet train | evaluate | md`` (one thin module per subcommand)."""

from .main import main

__all__ = ["main"]
