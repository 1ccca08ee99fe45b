"""lib.sh's helpers, sourced by a real bash in a scratch root."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from support.slow_http import slow_server

from builder.paths import TEMPLATES

LIB = TEMPLATES / "firstboot" / "lib.sh"
SECRET = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    etc = tmp_path / "etc/stackseed"
    etc.mkdir(parents=True)
    facts = {
        "region": "RegionOne",
        "nested_virt": False,
        "node": {"name": "block1", "ip": "10.0.0.41", "disks": [{"serial": "cv0"}]},
        "controller": {"name": "controller", "ip": "127.0.0.1"},
        "provider": None,
    }
    (etc / "node.json").write_text(json.dumps(facts))
    (etc / "secrets.json").write_text(json.dumps({"db_cinder": SECRET}))
    return tmp_path


def bash(root: Path, script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "STACKSEED_ROOT": str(root),
        "STACKSEED_PHASE": "99-test",
    }
    return subprocess.run(
        ["bash", "-c", f'. "{LIB}"\n{script}'],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_fact_reads_dotted_paths(scratch: Path) -> None:
    result = bash(scratch, "fact node.ip; fact node.disks.0.serial; fact nested_virt; fact region")
    assert result.stdout.split() == ["10.0.0.41", "cv0", "false", "RegionOne"]


def test_fact_fails_on_missing_or_null(scratch: Path) -> None:
    missing = bash(scratch, "fact node.nope; echo after")
    assert missing.returncode != 0
    assert "after" not in missing.stdout
    assert "node.nope" in missing.stderr
    assert bash(scratch, "fact provider.cidr").returncode != 0
    assert bash(scratch, "fact_or provider.cidr none").stdout.strip() == "none"


def test_secret_reads_without_echoing_errors_with_values(scratch: Path) -> None:
    assert bash(scratch, "secret db_cinder").stdout == SECRET
    absent = bash(scratch, "secret svc_nova")
    assert absent.returncode != 0
    assert "svc_nova" in absent.stderr
    assert SECRET not in absent.stderr + absent.stdout


def test_need_secrets_fails_before_anything_happens(scratch: Path) -> None:
    result = bash(scratch, 'need_secrets db_cinder svc_cinder; touch "$STACKSEED_ROOT/made"')
    assert result.returncode != 0
    assert "svc_cinder" in result.stderr
    assert not (scratch / "made").exists()


def test_wait_for_times_out_naming_the_dependency(scratch: Path) -> None:
    started = time.monotonic()
    result = bash(scratch, "wait_for 'keystone /v3 at 10.9.9.9:5000' 3 false; echo after")
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "after" not in result.stdout
    assert "timed out after 3s waiting for keystone /v3 at 10.9.9.9:5000" in result.stderr
    assert 2.5 <= elapsed < 15  # bounded: the backoff never oversleeps the timeout by much


def test_wait_for_returns_once_the_command_succeeds(scratch: Path) -> None:
    flag = scratch / "up"
    result = bash(
        scratch,
        f'(sleep 2; touch "{flag}") & wait_for "the flag" 30 test -e "{flag}"; echo ready',
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ready")


def test_probe_tcp_and_http_against_a_real_listener(scratch: Path) -> None:
    server = subprocess.Popen(
        ["python3", "-m", "http.server", "--bind", "127.0.0.1", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONUNBUFFERED": "1"},
        cwd=scratch,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = line.split(" port ")[1].split()[0]
        ok = bash(scratch, f"probe_tcp 127.0.0.1 {port} && probe_http http://127.0.0.1:{port}/ 200")
        assert ok.returncode == 0, ok.stderr
        wrong = bash(scratch, f"probe_http http://127.0.0.1:{port}/missing 200")
        assert wrong.returncode != 0
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_probe_http_waits_for_a_slow_answer_once_and_keeps_its_bound(scratch: Path) -> None:
    """A request the server took is waited for, not abandoned and asked again (a loaded
    controller renders every abandoned page anyway); STACKSEED_ANSWER_TIMEOUT bounds it."""
    with slow_server(delay=1.5) as server:
        ok = bash(scratch, f"STACKSEED_ANSWER_TIMEOUT=10 probe_http {server.url} 200")
        assert ok.returncode == 0, ok.stderr
        assert server.requests == 1
    with slow_server(delay=3.0) as server:
        late = bash(scratch, f"STACKSEED_ANSWER_TIMEOUT=1 probe_http {server.url} 200")
        assert late.returncode != 0
    # wait_for hands the probe its own time left, over any bound set before: one slow answer
    # within it is ready.
    with slow_server(delay=3.0) as server:
        script = f"STACKSEED_ANSWER_TIMEOUT=1 wait_for 'a slow page' 60 probe_http {server.url} 200"
        ok = bash(scratch, script)
        assert ok.returncode == 0, ok.stderr
        assert server.requests == 1


@pytest.mark.skipif(
    shutil.which("crudini") is None, reason="needs crudini (apt-get install crudini)"
)
def test_ini_merge_takes_secrets_on_stdin_and_keeps_other_keys(scratch: Path) -> None:
    conf = scratch / "cinder.conf"
    conf.write_text("# a comment\n[DEFAULT]\nkeep = yes\n[database]\nconnection = sqlite://\n")
    result = bash(
        scratch,
        f'ini_merge "{conf}" <<INI\n[database]\n'
        "connection = $(db_url cinder db_cinder cinder)\nINI\n"
        f'ini_set "{conf}" lvm volume_group cinder-volumes',
    )
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert "# a comment" in text and "keep = yes" in text
    assert f"connection = mysql+pymysql://cinder:{SECRET}@127.0.0.1/cinder" in text
    assert "volume_group = cinder-volumes" in text
    assert SECRET not in result.stdout + result.stderr


def test_ini_merge_refuses_a_missing_file(scratch: Path) -> None:
    result = bash(scratch, f'echo "[a]" | ini_merge "{scratch}/nope.conf"')
    assert result.returncode != 0
    assert "nope.conf is missing" in result.stderr


def test_neutron_backend_linuxbridge_fails_early_where_the_agent_is_gone(scratch: Path) -> None:
    if Path("/usr/bin/neutron-linuxbridge-agent").exists():
        pytest.skip("this host has the Linux bridge agent")
    facts = json.loads((scratch / "etc/stackseed/node.json").read_text())
    facts.update(neutron_backend="linuxbridge", release="trixie")
    (scratch / "etc/stackseed/node.json").write_text(json.dumps(facts))
    result = bash(scratch, "neutron_l2_agent")
    assert result.returncode != 0
    assert "removed in neutron 2025.1" in result.stderr


def neutron_common_settings(scratch: Path) -> str:
    """What neutron_common_config merges into neutron.conf. The config writers are redirected
    to a file: the settings are what is checked."""
    out = scratch / "neutron.conf.merged"
    (scratch / "etc/sudoers.d").mkdir(parents=True, exist_ok=True)
    result = bash(
        scratch,
        f'ini_merge() {{ cat >>"{out}"; }}; conf_private() {{ :; }}\n'
        "transport_url() { echo rabbit://lab; }\nneutron_common_config",
    )
    assert result.returncode == 0, result.stderr
    return out.read_text()


@pytest.mark.parametrize("backend", ["openvswitch", "linuxbridge"])
def test_neutron_common_config_enables_experimental_linuxbridge(
    scratch: Path, backend: str
) -> None:
    facts = json.loads((scratch / "etc/stackseed/node.json").read_text())
    facts["neutron_backend"] = backend
    (scratch / "etc/stackseed/node.json").write_text(json.dumps(facts))
    enabled = "[experimental]\nlinuxbridge = true" in neutron_common_settings(scratch)
    assert enabled == (backend == "linuxbridge")


def test_neutron_common_config_runs_the_agents_root_commands_through_one_daemon(
    scratch: Path,
) -> None:
    merged = configparser.ConfigParser(interpolation=None)
    merged.read_string(neutron_common_settings(scratch))
    daemon = merged.get("agent", "root_helper_daemon").split()
    # The daemon reads its filters from rootwrap.conf; sudo runs it, as neutron's user.
    assert daemon == ["sudo", "/usr/bin/neutron-rootwrap-daemon", "/etc/neutron/rootwrap.conf"]


# Per project: the socket of its stackseed-privsep service (the unit user-data writes;
# test_render.py checks the two agree), the config files its service reads, in order, and the
# sections its privsep contexts read, by context (read from the modules that define them:
# neutron/privileged/__init__.py; nova/privsep/__init__.py, os-vif's vif_plug_*/privsep.py,
# os_brick/privileged/__init__.py).
PRIVSEP: dict[str, tuple[str, list[str], dict[str, str]]] = {
    "neutron": (
        "/run/stackseed/privsep-neutron.sock",
        ["/etc/neutron/neutron.conf"],
        {
            "privsep": "neutron.privileged.default",
            "privsep_dhcp_release": "neutron.privileged.dhcp_release_cmd",
            "privsep_ovs_vsctl": "neutron.privileged.ovs_vsctl_cmd",
            "privsep_namespace": "neutron.privileged.namespace_cmd",
            "privsep_conntrack": "neutron.privileged.conntrack_cmd",
            "privsep_link": "neutron.privileged.link_cmd",
        },
    ),
    "nova": (
        "/run/stackseed/privsep-nova.sock",
        ["/etc/nova/nova.conf", "/etc/nova/nova-compute.conf"],
        {
            "nova_sys_admin": "nova.privsep.sys_admin_pctxt",
            "vif_plug_ovs_privileged": "vif_plug_ovs.privsep.vif_plug",
            "vif_plug_linux_bridge_privileged": "vif_plug_linux_bridge.privsep.vif_plug",
            "privsep_osbrick": "os_brick.privileged.default",
        },
    ),
}
# stackseed-privsep's helper side.
PRIVSEP_SPAWN = "/usr/local/lib/stackseed/stackseed-privsep"


def privsep_settings(scratch: Path, project: str) -> configparser.ConfigParser:
    """What <project>_privsep merges into the project's config (redirected to a file)."""
    out = scratch / f"{project}.conf.merged"
    (scratch / "etc/sudoers.d").mkdir(parents=True, exist_ok=True)
    result = bash(scratch, f'ini_merge() {{ cat >>"{out}"; }}\n{project}_privsep')
    assert result.returncode == 0, result.stderr
    merged = configparser.ConfigParser(interpolation=None)
    merged.read_string(out.read_text())
    return merged


def privsep_rule(scratch: Path, project: str) -> tuple[Path, re.Pattern[str]]:
    """The sudoers drop-in <project>_privsep installs, and its rule's argument regex."""
    privsep_settings(scratch, project)
    dropin = scratch / f"etc/sudoers.d/stackseed-{project}-privsep"
    rules = [line for line in dropin.read_text().splitlines() if "NOPASSWD:" in line]
    assert len(rules) == 1, rules
    user, rest = rules[0].split(" ALL = (root) NOPASSWD: ")
    assert user == project
    command, args = rest.split(" ", 1)
    assert command == PRIVSEP_SPAWN
    assert args.startswith("^") and args.endswith("$")  # sudo's regex form
    return dropin, re.compile(args)


def test_neutron_common_config_sets_up_neutrons_privsep(scratch: Path) -> None:
    merged = configparser.ConfigParser(interpolation=None)
    merged.read_string(neutron_common_settings(scratch))
    assert set(PRIVSEP["neutron"][2]) <= set(merged.sections())


@pytest.mark.parametrize("project", sorted(PRIVSEP))
def test_privsep_helpers_start_through_sudo_alone(scratch: Path, project: str) -> None:
    sock, configs, contexts = PRIVSEP[project]
    merged = privsep_settings(scratch, project)
    files = [arg for conf in configs for arg in ("--config-file", conf)]
    for section in contexts:
        helper = merged.get(section, "helper_command").split()
        assert helper == ["sudo", PRIVSEP_SPAWN, "spawn", "--socket", sock, *files], section
    assert set(merged.sections()) == set(contexts)


@pytest.mark.skipif(shutil.which("visudo") is None, reason="sudo's visudo is not installed")
@pytest.mark.parametrize("project", sorted(PRIVSEP))
def test_privsep_rule_parses_and_is_root_only(scratch: Path, project: str) -> None:
    dropin, _regex = privsep_rule(scratch, project)
    assert oct(dropin.stat().st_mode & 0o777) == "0o440"
    check = subprocess.run(["visudo", "-cf", str(dropin)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("project", sorted(PRIVSEP))
def test_privsep_rule_admits_exactly_what_oslo_privsep_runs(scratch: Path, project: str) -> None:
    sock_file, configs, contexts = PRIVSEP[project]
    _dropin, regex = privsep_rule(scratch, project)
    # What oslo.privsep appends to helper_command: the context's python path and a socket in
    # a directory tempfile.mkdtemp() just made.
    sock = Path(tempfile.mkdtemp(dir="/tmp"))
    sock.rmdir()
    spawn = f"spawn --socket {sock_file}"
    conf = spawn + "".join(f" --config-file {file}" for file in configs)
    for context in contexts.values():
        line = f"{conf} --privsep_context {context} --privsep_sock_path {sock}/privsep.sock"
        assert regex.fullmatch(line), line
    first = next(iter(contexts.values()))
    good = f"--privsep_context {first} --privsep_sock_path {sock}/privsep.sock"
    other = "neutron.privileged.default" if project != "neutron" else "os_brick.privileged.x"
    refused = [
        # a config file of the caller's (a logging config runs code), before or after
        f"{spawn} --config-file /tmp/x.conf {good}",
        f"{conf} --config-file /tmp/x.conf {good}",
        f"{conf} {good} --config-file /tmp/x.conf",
        f"{conf.replace('.conf', 'Xconf')} {good}",
        # the project's files, but not all of them or in another order
        f"{spawn} {good}",
        f"{spawn}{''.join(f' --config-file {file}' for file in reversed(configs))} {good}"
        if len(configs) > 1
        else f"{conf}{conf.removeprefix(spawn)} {good}",
        # another project's context, a context the rule does not name, or a socket elsewhere
        f"{conf} {good.replace(first, other)}",
        f"{conf} {good.replace(first, first + '_test')}",
        f"{conf} {good.replace(str(sock), '/tmp/a/../b')}",
        f"{conf} {good.replace(str(sock), '/run/x')}",
        # another server to ask (one that forks as root for whoever asks), or another mode
        f"{conf.replace(f'privsep-{project}.sock', 'x.sock')} {good}",
        f"{conf.replace('spawn', 'serve')} {good}",
    ]
    for line in refused:
        assert not regex.fullmatch(line), line


def test_write_private_creates_the_file_with_its_final_mode(scratch: Path) -> None:
    target = scratch / "admin-openrc"
    me = f"{os.getuid()}:{os.getgid()}"
    result = bash(scratch, f'echo "export OS_PASSWORD=x" | write_private "{target}" {me} 0600')
    assert result.returncode == 0, result.stderr
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert target.read_text() == "export OS_PASSWORD=x\n"


def rabbit_options(ini: Path) -> dict[str, Any]:
    """oslo.messaging's [oslo_messaging_rabbit] as a uwsgi app started from `ini` reads it: the
    .ini's `env =` lines are the process environment, which oslo.config consults."""
    from oslo_config import cfg
    from oslo_messaging._drivers import impl_rabbit

    env = dict(
        line.removeprefix("env = ").split("=", 1)
        for line in ini.read_text().splitlines()
        if line.startswith("env = ")
    )
    conf = cfg.ConfigOpts()
    conf.register_opts(impl_rabbit.rabbit_opts, group="oslo_messaging_rabbit")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        conf([], project="stackseed-test", default_config_files=[], default_config_dirs=[])
        # oslo.config reads the environment when an option is first looked up.
        return {opt.dest: conf.oslo_messaging_rabbit[opt.dest] for opt in impl_rabbit.rabbit_opts}


@pytest.mark.parametrize("threads", ["native", "eventlet"])
def test_uwsgi_rpc_heartbeat_sets_what_oslo_messaging_reads_once(
    scratch: Path, threads: str
) -> None:
    ini = scratch / "api-uwsgi.ini"
    ini.write_text("[uwsgi]\nprocesses = 2\nenv = OS_OSLO_MESSAGING_RABBIT__PROCESSNAME=api\n")
    default = rabbit_options(ini)
    # The other model first: an app re-run under a changed lib.sh must not keep both overrides.
    other = "eventlet" if threads == "native" else "native"
    for model in (other, threads, threads):
        result = bash(scratch, f'uwsgi_rpc_heartbeat {model} "{ini}"')
        assert result.returncode == 0, result.stderr
    lines = ini.read_text().splitlines()
    assert lines[:3] == [
        "[uwsgi]",
        "processes = 2",
        "env = OS_OSLO_MESSAGING_RABBIT__PROCESSNAME=api",
    ]
    assert len(lines) == 4, lines
    rabbit = rabbit_options(ini)
    if threads == "native":
        assert rabbit["heartbeat_in_pthread"] and not default["heartbeat_in_pthread"]
        assert rabbit["heartbeat_timeout_threshold"] == default["heartbeat_timeout_threshold"] > 0
    else:
        # No heartbeat: oslo.messaging starts no heartbeat thread of either kind.
        assert rabbit["heartbeat_timeout_threshold"] == 0
        assert rabbit["heartbeat_in_pthread"] == default["heartbeat_in_pthread"]


def test_uwsgi_rpc_heartbeat_refuses_a_missing_file_or_an_unknown_model(scratch: Path) -> None:
    result = bash(scratch, f'uwsgi_rpc_heartbeat native "{scratch}/missing.ini"')
    assert result.returncode != 0
    assert "missing.ini is missing" in result.stderr
    ini = scratch / "api-uwsgi.ini"
    ini.write_text("[uwsgi]\n")
    result = bash(scratch, f'uwsgi_rpc_heartbeat "{ini}"')
    assert result.returncode != 0
    assert "not native or eventlet" in result.stderr
    assert ini.read_text() == "[uwsgi]\n"


# A stand-in systemctl (systemd cannot run here): notes each call; `restart` fails when any unit
# it names is listed in $root/broken, and `is-active` answers from $root/active.
FAKE_SYSTEMCTL = """#!/bin/bash
root=$(dirname "$0")
echo "$*" >>"$root/systemctl.log"
case "$1" in
restart)
    shift
    for unit in "$@"; do
        if grep -qx "$unit" "$root/broken" 2>/dev/null; then
            echo "Job for $unit.service failed." >&2
            exit 1
        fi
        echo "$unit" >>"$root/active"
    done
    ;;
is-active)
    [ "$2" = --quiet ] && shift
    grep -qx "$2" "$root/active" 2>/dev/null
    ;;
show)
    # As systemd prints them: its own order of properties, a block per unit.
    shift 2
    [ "$1" = -- ] && shift
    first=1
    for unit in "$@"; do
        [ $first = 1 ] || echo
        first=0
        echo "NRestarts=$(cat "$root/restarts-$unit" 2>/dev/null || echo 0)"
        echo "Id=$unit.service"
        echo "ActiveState=$(cat "$root/state-$unit" 2>/dev/null || echo active)"
    done
    ;;
esac
"""


def with_systemctl(root: Path, broken: tuple[str, ...] = ()) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(0o755)
    (bin_dir / "broken").write_text("".join(f"{unit}\n" for unit in broken))
    # A table that owns every unit below, so svc_start enables none of them.
    table = root / "usr/local/lib/stackseed/phases.json"
    table.parent.mkdir(parents=True)
    table.write_text(json.dumps({"phases": {"42-x": {"units": ["a", "b", "c"]}}}))
    return bin_dir


def test_svc_start_starts_a_phases_units_in_one_job(scratch: Path) -> None:
    """One systemd job for the units together: one after another, a phase paid the sum of their
    start-ups (a minute or more each under TCG)."""
    bin_dir = with_systemctl(scratch)

    result = bash(scratch, f'PATH="{bin_dir}:$PATH"\nsvc_start a b c')

    assert result.returncode == 0, result.stderr
    calls = (bin_dir / "systemctl.log").read_text().splitlines()
    assert [c for c in calls if c.startswith("restart")] == ["restart a b c"]
    assert calls[0] == "daemon-reload"  # the start timeout drop-in, written in the scratch root
    dropin = scratch / "etc/systemd/system/service.d/60-stackseed-timeout.conf"
    assert "TimeoutStartSec=900" in dropin.read_text()
    assert not [c for c in calls if c.startswith("enable")]


def test_svc_start_names_the_unit_that_did_not_start(scratch: Path) -> None:
    bin_dir = with_systemctl(scratch, broken=("b",))

    result = bash(scratch, f'PATH="{bin_dir}:$PATH"\nsvc_start a b c\necho after')

    assert result.returncode == 1
    assert "service b did not start: see journalctl -u b" in result.stderr
    assert "after" not in result.stdout


def test_uwsgi_app_one_process_where_threads_serve_and_every_response_closes(
    scratch: Path,
) -> None:
    threaded = scratch / "keystone-uwsgi.ini"
    threaded.write_text("[uwsgi]\nprocesses = 16\nthreads = 32\nlisten = 100\n")
    single = scratch / "nova-api-uwsgi.ini"
    single.write_text("[uwsgi]\nprocesses = 16\nthreads = 1\nname = nova-api\nuid = nova\n")
    unsaid = scratch / "glance-api-uwsgi.ini"
    unsaid.write_text("[uwsgi]\nprocesses = 8\n")

    for _ in range(2):  # idempotent
        result = bash(scratch, f'uwsgi_app "{threaded}" "{single}" "{unsaid}" "{scratch}/no.ini"')
        assert result.returncode == 0, result.stderr

    close = "add-header = Connection: close\nworker-reload-mercy = 10\n"
    assert threaded.read_text() == f"[uwsgi]\nprocesses = 1\nthreads = 32\nlisten = 100\n{close}"
    fifo = "/var/lib/nova/uwsgi-nova-api.fifo"
    assert single.read_text() == (
        f"[uwsgi]\nprocesses = 2\nthreads = 1\nname = nova-api\nuid = nova\n{close}"
        "cheaper-algo = manual\ncheaper = 1\ncheaper-initial = 1\n"
        f"master-fifo = {fifo}\n"
        "hook-accepting1-once = exec:/usr/local/lib/stackseed/stackseed-workers --if-ready"
        f" {single} || :\n"
    )
    # Without a user to own the FIFO, both workers from the start, as before.
    assert unsaid.read_text() == f"[uwsgi]\nprocesses = 2\n{close}"


def test_fernet_keys_make_a_repository_keystone_reads_and_keep_it(scratch: Path) -> None:
    """As keystone-manage fernet_setup leaves it (keys 0 and 1, 0600 in a 0700 directory), without
    importing keystone; a second run changes nothing, an interrupted one is completed."""
    import base64
    import grp
    import pwd
    import stat

    owner = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
    repo = scratch / "etc/keystone/fernet-keys"

    result = bash(scratch, f'fernet_keys "{repo}" {owner}')

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in repo.iterdir()) == ["0", "1"]
    assert stat.S_IMODE(repo.stat().st_mode) == 0o700
    keys = {}
    for path in repo.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        keys[path.name] = path.read_text()
        assert len(base64.urlsafe_b64decode(keys[path.name])) == 32
        assert keys[path.name] not in result.stdout + result.stderr
    assert keys["0"] != keys["1"]
    fernet = pytest.importorskip("cryptography.fernet")
    for key in keys.values():  # keystone hands each key to cryptography's Fernet
        assert fernet.Fernet(key).decrypt(fernet.Fernet(key).encrypt(b"x")) == b"x"

    (repo / "0").unlink()
    assert bash(scratch, f'fernet_keys "{repo}" {owner}').returncode == 0
    assert (repo / "1").read_text() == keys["1"]
    assert len(base64.urlsafe_b64decode((repo / "0").read_text())) == 32


@pytest.mark.parametrize(
    ("state", "restarts", "says"),
    [("failed", 0, "b failed"), ("activating", 3, "b restarted 3 times")],
)
def test_a_wait_gives_up_at_once_when_a_unit_the_phase_started_failed_or_loops(
    scratch: Path, state: str, restarts: int, says: str
) -> None:
    """keystone's uwsgi exiting at once cost a phase its whole 900 s wait for /v3."""
    bin_dir = with_systemctl(scratch)
    script = (
        f'PATH="{bin_dir}:$PATH"\n'
        "svc_start a b\n"
        f"echo {state} >{bin_dir}/state-b\n"
        f"echo {restarts} >{bin_dir}/restarts-b\n"
        'wait_for "b on its port" 600 false\n'
    )
    began = time.monotonic()

    result = bash(scratch, script)

    assert result.returncode == 1
    assert time.monotonic() - began < 30
    assert f"ERROR: {says} while waiting for b on its port: see journalctl -u b" in result.stderr


def test_a_wait_without_started_units_or_with_healthy_ones_waits_its_time(scratch: Path) -> None:
    bin_dir = with_systemctl(scratch)
    (bin_dir / "restarts-a").write_text("2\n")  # one hiccup is not a loop
    for setup in ("", "svc_start a b\n"):
        result = bash(scratch, f'PATH="{bin_dir}:$PATH"\n{setup}wait_for "x" 2 false')
        assert result.returncode == 1
        assert "timed out after 2s waiting for x" in result.stderr
