"""The one place that maps errors to exit codes (for `vaultdoit` and for `doit` alike).

0 success, 1 a build or check failed, 2 a user mistake (VaultError, an OS error
on a file), 3 an unexpected internal error, 130 interrupted. Kept apart from
the click CLI so that a `doit` run pays for neither click nor anything else.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from vaultdoit.errors import CommandFailed, LockBusy, RemoteError, Stalled, VaultError, os_error

EXIT_FAILED, EXIT_USER, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 3, 130
EXIT_WOULD_RUN = EXIT_FAILED  # `status`: a task would run (CI gates on it)


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


@contextmanager
def exit_on_error(debug: bool = False) -> Iterator[None]:
    """Turn exceptions into one line on stderr and the matching exit code."""
    try:
        yield
    except KeyboardInterrupt:
        _say("vaultdoit: interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except (CommandFailed, Stalled, LockBusy, RemoteError) as err:
        # LockBusy too: the project is fine, the same command succeeds later; RemoteError: the
        # registry failed (`vaultdoit cache push|pull`), not the project.
        _say(f"vaultdoit: error: {err}")
        sys.exit(EXIT_FAILED)
    except VaultError as err:
        if debug:
            traceback.print_exc()
        _say(f"vaultdoit: error: {err}")
        sys.exit(EXIT_USER)
    except OSError as err:  # permission, read-only, disk full, missing file
        if debug:
            traceback.print_exc()
        _say(f"vaultdoit: error: {os_error(err)}")
        sys.exit(EXIT_USER)
    except Exception:  # noqa: BLE001 - the last line of defence
        if debug:
            traceback.print_exc()
        else:
            exc = sys.exc_info()[1]
            _say(f"vaultdoit: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        sys.exit(EXIT_INTERNAL)
