"""The demo context's one privileged call."""

import os

from tests.support import privsep_demo


@privsep_demo.default.entrypoint
def identity() -> tuple[int, int, int]:
    """uid, pid, and the pid of the process that imported the context's package."""
    return os.getuid(), os.getpid(), privsep_demo.IMPORTED_BY
