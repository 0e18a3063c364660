"""The command line, ``pyro-vae``: the only layer that knows about flags.

It parses flags into the library's configs, calls the library, and translates the library's
Python-worded errors (field names) into the flags the user typed.
"""

from pyro_vae.cli.main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
