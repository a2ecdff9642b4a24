"""``python -m sppdet``: the same command line as ``sppdet``."""

from sppdet.cli import main

main(prog_name="sppdet")
