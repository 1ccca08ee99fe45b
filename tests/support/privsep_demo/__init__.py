"""A real oslo.privsep context for tests/test_firstboot_privsep.py: what a project's
`<project>.privileged` package is to neutron. IMPORTED_BY is the pid of the process that
imported it, so a test can tell a daemon forked from stackseed-privsep's import from a fresh
helper's."""

import os

from oslo_privsep import capabilities, priv_context

IMPORTED_BY = os.getpid()

default = priv_context.PrivContext(
    __name__,
    cfg_section="privsep_demo",
    pypath=__name__ + ".default",
    capabilities=[capabilities.CAP_NET_ADMIN],
)
