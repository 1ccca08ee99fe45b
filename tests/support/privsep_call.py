"""One call through tests/support/privsep_demo as an agent makes it: oslo.privsep starts the
context's daemon with HELPER (its helper_command) and the call runs there. Prints
{"uid", "pid", "imported_by"} as JSON; run as a process of its own (oslo.config's global CONF).

Usage: python privsep_call.py HELPER [CALLS]"""

import json
import sys

from oslo_config import cfg

from tests.support import privsep_demo
from tests.support.privsep_demo import calls


def main() -> None:
    cfg.CONF([], project="privsep-demo")
    cfg.CONF.set_override("helper_command", sys.argv[1], group="privsep_demo")
    for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
        uid, pid, imported_by = calls.identity()
        print(json.dumps({"uid": uid, "pid": pid, "imported_by": imported_by}), flush=True)
    privsep_demo.default.stop()


if __name__ == "__main__":
    main()
