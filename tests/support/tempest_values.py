"""Run by the tempest environment's Python: prints, as JSON, what tempest's own configuration
code makes of a tempest.conf for the clients the lab's tests use (the parameters each service
client is built with: HTTP timeout, build timeout and interval).

    <venv>/bin/python tests/support/tempest_values.py tempest.conf
"""

from __future__ import annotations

import json
import sys

from tempest import config

SERVICES = ("compute", "network", "volume", "image", "identity")


def main(path: str) -> None:
    config.CONF.set_config_path(path)
    values = {}
    for service in SERVICES:
        params = config.service_client_config(service)
        values[service] = {
            key: params[key]
            for key in ("http_timeout", "build_timeout", "build_interval")
            if key in params
        }
    print(json.dumps(values, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
