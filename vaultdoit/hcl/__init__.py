"""Read a folder of Packer HCL2 templates the way ``packer build DIR`` loads it.

Three modules, one job each: :mod:`~vaultdoit.hcl.syntax` (the only importer of
python-hcl2) turns text into expression nodes with ``file:line``;
:mod:`~vaultdoit.hcl.evaluate` and :mod:`~vaultdoit.hcl.functions` evaluate them
with cty's rules and Packer's function table; :mod:`~vaultdoit.hcl.loader` applies
Packer's loading rules (folder, variables, locals, sources, builds, provisioners).

Public entry point: :func:`load_packer_dir`.
"""

from vaultdoit.hcl.loader import (
    ANSIBLE_TYPES, PROVISIONER_GRAPH_ATTRS, SOURCE_GRAPH_ATTRS, STABLE_ATTRS, UNSET_HINT, load_packer_dir,
)

__all__ = ["load_packer_dir", "SOURCE_GRAPH_ATTRS", "STABLE_ATTRS", "PROVISIONER_GRAPH_ATTRS", "ANSIBLE_TYPES",
           "UNSET_HINT"]
