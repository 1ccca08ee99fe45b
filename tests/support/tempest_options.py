"""Run by the tempest environment's Python: prints every option of a tempest.conf that tempest
does not register (a typo there would be silently ignored), and every deprecated one.

    <venv>/bin/python tests/support/tempest_options.py tempest.conf
"""

from __future__ import annotations

import configparser
import sys

from tempest import config

# Registered by oslo.log and oslo.concurrency when tempest starts, not by tempest.config.
OSLO = {("DEFAULT", "log_dir"), ("DEFAULT", "log_file"), ("DEFAULT", "use_stderr")}
OSLO_GROUPS = {"oslo_concurrency"}


def main(path: str) -> None:
    options = {}
    for group, opts in config._opts:
        name = "DEFAULT" if group is None else group if isinstance(group, str) else group.name
        for opt in opts:
            options[(name, opt.name)] = opt
    written = configparser.ConfigParser(interpolation=None)
    written.optionxform = str  # type: ignore[assignment,method-assign]
    written.read(path)
    for section in ["DEFAULT", *written.sections()]:
        keys = written.defaults() if section == "DEFAULT" else written[section]
        for key in keys:
            if section != "DEFAULT" and key in written.defaults():
                continue
            opt = options.get((section, key))
            if opt is None:
                if (section, key) not in OSLO and section not in OSLO_GROUPS:
                    print(f"unknown {section}.{key}")
            elif opt.deprecated_for_removal:
                print(f"deprecated {section}.{key}")


if __name__ == "__main__":
    main(sys.argv[1])
