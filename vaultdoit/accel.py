"""Pick the QEMU accelerator: KVM when it really works, else TCG."""

from __future__ import annotations

import functools
import os

from vaultdoit import proc
from vaultdoit.errors import CommandFailed, ConfigError

VALID = ("auto", "kvm", "tcg")


def probe_argv(qemu: str = "qemu-system-x86_64") -> list[str]:
    """A QEMU that creates one KVM vCPU, resets it and quits: ~0.1 s."""
    # ``-machine none`` would succeed even where vCPUs cannot run (nested
    # setups whose KVM fails on the first MSR write), so use a real machine.
    return [qemu, "-accel", "kvm", "-machine", "pc", "-cpu", "host", "-nodefaults",
            "-display", "none", "-monitor", "stdio", "-S"]


@functools.cache
def kvm_works() -> bool:
    """True when /dev/kvm is usable for a real vCPU on this host."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        proc.run(probe_argv(), stdin=b"quit\n", capture=True, timeout=20)
    except (CommandFailed, OSError):
        return False
    except Exception:  # a timeout is a "no", never a hang
        return False
    return True


def choose(setting: str = "auto") -> str:
    """Resolve the ``accelerator`` setting (auto/kvm/tcg) to ``kvm`` or ``tcg``."""
    if setting not in VALID:
        raise ConfigError(f"accelerator must be one of {', '.join(VALID)}, not {setting!r}",
                          file="vault.toml", hint='set accelerator = "auto"')
    if setting == "auto":
        return "kvm" if kvm_works() else "tcg"
    return setting
