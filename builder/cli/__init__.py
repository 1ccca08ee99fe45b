"""The command lines: `lab` (lab.py; verify, logs, tempest add to it) and `build-images`."""
