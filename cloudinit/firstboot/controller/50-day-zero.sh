#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Day-zero content, made once (found, not duplicated, on a re-run): flavors, the provider
# network and its pool, a self-service network routed to it, SSH and ICMP in the admin
# project's default security group, and the test image the controller image carries
# (kernel + initramfs built from Debian packages by elements/stackseed-testimage).
need_secrets admin_password
testimage=${STACKSEED_TESTIMAGE_DIR:-/usr/share/stackseed/testimage}
for f in vmlinuz initrd.img; do
    [ -s "$testimage/$f" ] || fail "test image part $testimage/$f is missing (controller image lacks elements/stackseed-testimage)"
done
fact provider.cidr >/dev/null

STACKSEED_TESTIMAGE_DIR=$testimage os_py <<'PY'
import ipaddress, tempfile

FLAVORS = [("m1.tiny", 1, 512, 1), ("m1.small", 1, 2048, 20),
           ("m1.medium", 2, 4096, 40), ("m1.large", 4, 8192, 80)]
for name, vcpus, ram, disk in FLAVORS:
    if conn.compute.find_flavor(name) is None:
        say(f"creating flavor {name}")
        conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk, is_public=True)

provider = facts["provider"]
net = conn.network.find_network("provider")
if net is None:
    say("creating provider network (flat, physnet provider, external, shared)")
    net = conn.network.create_network(
        name="provider", is_shared=True, is_router_external=True,
        provider_network_type="flat", provider_physical_network="provider")
if conn.network.find_subnet("provider") is None:
    cidr = ipaddress.ip_network(provider["cidr"])
    pool = provider.get("pool") or [str(cidr[101]), str(cidr[-6])]
    say(f"creating provider subnet {cidr} pool {pool[0]}-{pool[1]}")
    conn.network.create_subnet(
        name="provider", network_id=net.id, ip_version=4, cidr=str(cidr),
        gateway_ip=provider["gateway"], enable_dhcp=True,
        allocation_pools=[{"start": pool[0], "end": pool[1]}])

self_net = conn.network.find_network("selfservice")
if self_net is None:
    say("creating self-service network")
    self_net = conn.network.create_network(name="selfservice")
self_subnet = conn.network.find_subnet("selfservice")
if self_subnet is None:
    say("creating self-service subnet 172.16.1.0/24")
    self_subnet = conn.network.create_subnet(
        name="selfservice", network_id=self_net.id, ip_version=4,
        cidr="172.16.1.0/24", gateway_ip="172.16.1.1")

router = conn.network.find_router("router")
if router is None:
    say("creating router to the provider network")
    router = conn.network.create_router(
        name="router", external_gateway_info={"network_id": net.id})
attached = {p.fixed_ips[0]["subnet_id"] for p in conn.network.ports(device_id=router.id)
            if p.fixed_ips}
if self_subnet.id not in attached:
    conn.network.add_interface_to_router(router, subnet_id=self_subnet.id)

admin = conn.identity.find_project("admin", domain_id="default", ignore_missing=False)
group = next(iter(conn.network.security_groups(project_id=admin.id, name="default")), None)
if group is None:
    raise SystemExit("the admin project has no default security group")
have = {(r.protocol, r.port_range_min, r.direction, r.ether_type)
        for r in conn.network.security_group_rules(security_group_id=group.id)}
for protocol, port in (("icmp", None), ("tcp", 22)):
    if (protocol, port, "ingress", "IPv4") not in have:
        say(f"allowing {protocol}{'/' + str(port) if port else ''} in the default group")
        conn.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ether_type="IPv4",
            protocol=protocol, port_range_min=port, port_range_max=port,
            remote_ip_prefix="0.0.0.0/0")

def image(name, **kwargs):
    found = conn.image.find_image(name)
    if found is not None and found.status == "active":
        return found
    if found is not None:  # a half-made upload from an interrupted run
        conn.image.delete_image(found)
    say(f"uploading image {name}")
    return conn.image.create_image(name=name, visibility="public", wait=True,
                                   allow_duplicates=False, **kwargs)

parts = os.environ["STACKSEED_TESTIMAGE_DIR"]
kernel = image("stackseed-test-kernel", filename=f"{parts}/vmlinuz",
               disk_format="aki", container_format="aki")
ramdisk = image("stackseed-test-initrd", filename=f"{parts}/initrd.img",
                disk_format="ari", container_format="ari")
# The root disk is a blank 1 MiB raw image: everything runs from the initramfs, which is why
# the server boots in about a minute even under TCG inside TCG.
with tempfile.NamedTemporaryFile(suffix=".raw") as blank:
    blank.truncate(1024 * 1024)
    blank.flush()
    image("stackseed-test", filename=blank.name, disk_format="raw", container_format="bare",
          kernel_id=kernel.id, ramdisk_id=ramdisk.id,
          os_command_line="console=ttyS0 quiet")
say("day-zero content in place")
PY
