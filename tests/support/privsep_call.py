"""Calls through tests/support/privsep_demo (or privsep_plugin) as an agent makes them:
oslo.privsep starts the context's daemon with HELPER (its helper_command) and the call runs
there. Prints {"uid", "pid", "imported_by"} as JSON per call; run as a process of its own
(oslo.config's global CONF).

Usage: python privsep_call.py HELPER [CALLS [demo|plugin]]"""

import json
import sys

from oslo_config import cfg

from tests.support import privsep_demo, privsep_plugin
from tests.support.privsep_demo import calls

CONTEXTS = {
    "demo": (privsep_demo.default, "privsep_demo", calls.identity),
    "plugin": (privsep_plugin.plug, "privsep_plugin_privileged", privsep_plugin.identity),
}


def main() -> None:
    context, section, identity = CONTEXTS[sys.argv[3] if len(sys.argv) > 3 else "demo"]
    cfg.CONF([], project="privsep-demo")
    cfg.CONF.set_override("helper_command", sys.argv[1], group=section)
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        uid, pid, imported_by = identity()
        print(json.dumps({"uid": uid, "pid": pid, "imported_by": imported_by}), flush=True)
    context.stop()


if __name__ == "__main__":
    main()
