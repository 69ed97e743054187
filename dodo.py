"""doit entry point: `doit list`, `doit final_image`, `doit verify`. See README.md."""

from vaultdoit.dodo import setup

globals().update(setup(__file__))
