"""Runs ON a node as root, executed by `RUNNER` below with the secret values in `VALUES`
(they arrive on stdin after this source, never on a command line).

Prints one line per place a secret was found: in /var/log, in cloud-init's instance-data.json,
or in any world-readable regular file. Nothing is printed when the node is clean. The values
themselves are never printed, only the file and the secret's index.
"""

import os
import stat

values = [line.encode() for line in VALUES.splitlines() if line.strip()]  # noqa: F821
PSEUDO = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs"}
with open("/proc/mounts") as mounts:
    # Kernel views (/proc/<pid>/cmdline of this very scan, say) are not files anyone wrote.
    kernel_views = [f.split()[1] for f in mounts if f.split()[2] in PSEUDO]
SKIP = (*kernel_views, "/usr", "/boot", "/var/lib/dpkg", "/var/cache/apt")
MAX = 64 << 20


def scan(path: str, why: str) -> None:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX)
    except OSError:
        return
    for index, value in enumerate(values):
        if value in data:
            print(f"{why}: {path}: secret #{index}")


def walk(top: str):
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not os.path.join(root, d).startswith(SKIP)]
        for name in files:
            yield os.path.join(root, name)


for path in walk("/var/log"):
    scan(path, "in /var/log")
scan("/run/cloud-init/instance-data.json", "in instance-data.json")
for path in walk("/"):
    try:
        info = os.lstat(path)
    except OSError:
        continue
    if stat.S_ISREG(info.st_mode) and info.st_mode & stat.S_IROTH and info.st_size < MAX:
        scan(path, "world-readable")
