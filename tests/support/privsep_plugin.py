"""A privsep context in a plain module, its calls beside it: what os-vif's
`vif_plug_ovs.privsep` is to nova-compute (tests/test_firstboot_privsep.py). IMPORTED_BY as in
privsep_demo."""

import os

from oslo_privsep import capabilities, priv_context

IMPORTED_BY = os.getpid()

plug = priv_context.PrivContext(
    __name__,
    cfg_section="privsep_plugin_privileged",
    pypath=__name__ + ".plug",
    capabilities=[capabilities.CAP_NET_ADMIN],
)


@plug.entrypoint
def identity() -> tuple[int, int, int]:
    """uid, pid, and the pid of the process that imported this module."""
    return os.getuid(), os.getpid(), IMPORTED_BY
