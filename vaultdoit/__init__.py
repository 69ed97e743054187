"""vaultdoit: incremental, cached VM golden-image builds on top of doit."""

__version__ = "0.1.0"
