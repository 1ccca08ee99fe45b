"""A subpackage this machine cannot import, as a privileged package may hold one for hardware
or a library a node lacks: stackseed-privsep's server must skip it and go on serving."""

raise RuntimeError("no such device here")
