#!/bin/bash
set -eu -o pipefail
# shellcheck source-path=SCRIPTDIR/.. source=lib.sh
. "${STACKSEED_LIB:-/usr/local/lib/stackseed/lib.sh}"

# Horizon on Apache (Debian's openstack-dashboard-apache serves it at /horizon), with sessions
# in memcached. Settings go to a local_settings.d drop-in, read after Debian's own.
need_secrets horizon_secret_key
ctl=$(fact node.ip)
dropin=/etc/openstack-dashboard/local_settings.d/_90_stackseed.py

write_private "$dropin" root:www-data 0640 <<PY
# Written by stackseed first boot (install guide: horizon install, 2025.1).
ALLOWED_HOSTS = ["*"]
SECRET_KEY = "$(secret horizon_secret_key)"
OPENSTACK_HOST = "$ctl"
OPENSTACK_KEYSTONE_URL = "http://$ctl:5000/v3"
SESSION_ENGINE = "django.contrib.sessions.backends.cache"
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": "$ctl:11211",
    }
}
OPENSTACK_KEYSTONE_MULTIDOMAIN_SUPPORT = True
OPENSTACK_API_VERSIONS = {"identity": 3, "image": 2, "volume": 3}
OPENSTACK_KEYSTONE_DEFAULT_DOMAIN = "Default"
OPENSTACK_KEYSTONE_DEFAULT_ROLE = "member"
TIME_ZONE = "UTC"
PY

# Debian enables the /horizon alias at install; make sure it and mod_wsgi are on. The package
# also enables default-ssl without mod_ssl, which stops Apache from starting: the lab's
# dashboard is plain HTTP on the management network, like the install guide's.
a2enmod -q wsgi >/dev/null 2>&1 || true
[ ! -e /etc/apache2/sites-enabled/default-ssl.conf ] || a2dissite -q default-ssl >/dev/null
[ -e /etc/apache2/sites-enabled/openstack-dashboard-alias-only.conf ] ||
    a2ensite -q openstack-dashboard-alias-only >/dev/null
# Horizon must run in the main interpreter of its daemon process: cryptography's Rust module
# refuses a second sub-interpreter, and Debian's alias-only site sets no process group. Naming
# a daemon group that no WSGIDaemonProcess defines fails every request, so the group is set
# only where the enabled Apache config defines one called horizon (the packaging may differ
# between releases); the main interpreter is asked for either way.
process_group=""
if grep -RqsE '^[[:space:]]*WSGIDaemonProcess[[:space:]]+horizon([[:space:]]|$)' \
    /etc/apache2/sites-enabled/ /etc/apache2/conf-enabled/; then
    process_group="    WSGIProcessGroup horizon"
fi
# Timeout: Horizon's first request loads Django; under TCG, with the other APIs busy, that took
# over Apache's default 300 s and the daemon's answer was dropped.
cat >/etc/apache2/conf-available/stackseed-horizon.conf <<CONF
Timeout 900
<Location /horizon>
${process_group}
    WSGIApplicationGroup %{GLOBAL}
</Location>
CONF
a2enconf -q stackseed-horizon >/dev/null
svc_start apache2
wait_for "horizon login page at http://$ctl/horizon/auth/login/" "$SERVICE_TIMEOUT" \
    probe_http "http://$ctl/horizon/auth/login/" 200
