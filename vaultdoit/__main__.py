"""``python -m vaultdoit`` entry point."""

from vaultdoit.cli import main

main()
