"""The libvirt launcher: the only package that imports libvirt.

A Plan becomes networks, volumes in a pool the lab owns, and domains; `down` removes exactly those.
"""
