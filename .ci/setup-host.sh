#!/usr/bin/env bash
# Make a fresh Debian host ready for stackseed: packages, the Python package, a running libvirtd.
# Idempotent: re-running installs nothing new and leaves a running libvirtd alone.
set -eu -o pipefail

APT_PACKAGES=(
  # image builds (diskimage-builder's needs)
  sudo debootstrap qemu-utils squashfs-tools e2fsprogs dosfstools kpartx gdisk
  # whole-disk images: the EFI system partition is filled with mtools (no mount)
  mtools
  # the lab: libvirt, QEMU, and the headers libvirt-python compiles against
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc python3-dev
  qemu-system-x86 dnsmasq-base iproute2 openssh-client
  # firmware-booted nodes (boot: firmware) and the whole-disk boot tests: UEFI, Secure Boot
  ovmf
  # lab verify --deep pings the test server's floating IP from the host
  iputils-ping
  # plain nodes' package repository: signed with the lab's own key (gpg; the agent holds the
  # secret key while it signs)
  gpg gpg-agent
  # seeds and their independent readers
  xorriso genisoimage libarchive-tools
  # tests: shell lint, INI edits as first boot does them; node runs the controller image's
  # Horizon scripts (AngularJS shim, pie chart guard) in tests/test_horizon_compat.py
  shellcheck crudini jq curl nodejs
  # tests: the controller image's database bake against a real MariaDB (no service is started)
  mariadb-server-core mariadb-client-core
  # tests: two-worker API apps under Debian's uwsgi (tests/test_firstboot_workers.py)
  uwsgi-core uwsgi-plugin-python3
  # what trixie's cloud-init (unpacked by the schema tests, run by Debian's python3) imports
  python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema python3-netifaces
  python3-oauthlib python3-requests python3-serial python3-yaml
)

extras="test,libvirt"
# --e2e: what the e2e suite adds (Horizon in Debian's headless Chromium, driven by Selenium).
if [ "${1:-}" = "--e2e" ]; then
  APT_PACKAGES+=(chromium chromium-driver)
  extras="$extras,e2e"
fi

export DEBIAN_FRONTEND=noninteractive
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: apt-get install ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
echo "setup: pip install -e ${repo}[${extras}]"
python3 -m pip install -q --disable-pip-version-check -e "${repo}[${extras}]"

# A /dev/kvm whose group is not the host's kvm group (a container runtime made the node) makes
# libvirt see KVM in its qemu probe but not for the qemu user, so it re-probes qemu on every
# domain define: ~50 s each under TCG. Giving the node the kvm group makes both views agree.
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
  echo "setup: chgrp kvm /dev/kvm (libvirt re-probes qemu on every define otherwise)"
  chgrp kvm /dev/kvm
fi

# No systemd on the build hosts: start libvirt's daemons by hand when they are not running.
if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "setup: starting virtlogd and libvirtd"
  mkdir -p /run/libvirt /var/lib/libvirt/dnsmasq
  pgrep -x virtlogd >/dev/null || virtlogd -d
  pgrep -x libvirtd >/dev/null || libvirtd -d
  for _ in $(seq 1 50); do
    virsh -c qemu:///system version >/dev/null 2>&1 && break
    sleep 0.2
  done
  virsh -c qemu:///system version >/dev/null
fi
echo "setup: done"
