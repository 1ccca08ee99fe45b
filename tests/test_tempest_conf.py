"""lab tempest without a cloud: tempest.conf from a plan and discovered ids, the workspace's
modes, the commands (no password in them), the selection, and the subunit parser on a stream
made by the real stestr (tests/fixtures/tempest-run.subunit, see tests/support/subunit_fixture).

Where the cached tempest environment exists (`lab tempest --install-only`), tempest itself
reads the written config and lists the smoke API tests, and stestr makes a fresh stream.
"""

from __future__ import annotations

import configparser
import json
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from support.subunit_fixture import IDS, make_stream, packet

from builder.cli import tempest as cli_tempest
from builder.cli.common import invoke
from builder.errors import StackseedError, UsageError
from builder.loader import load
from builder.paths import DEFAULT_TOPOLOGY
from builder.plan import make_plan
from builder.state import LabState
from builder.tempest import install as tempest_install
from builder.tempest import run as tempest_run
from builder.tempest.conf import (
    NOT_RUN,
    AdminCredentials,
    Discovered,
    build_config,
    render,
    service_available,
    volume_catalog_type,
)
from builder.tempest.discover import backends_from_hosts, discover, pick_alt_flavor
from builder.tempest.results import (
    Results,
    StreamParser,
    exception_text,
    parse_stream,
    short_id,
    summary_line,
    to_json,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tempest-run.subunit"
PASSWORD = "0123456789abcdef0123456789abcdef"
CATALOG = frozenset(
    {"identity", "image", "placement", "compute", "network", "block-storage", "volumev3"}
)
ADMIN = AdminCredentials("admin", PASSWORD, "admin")


@pytest.fixture(scope="module")
def plan():
    return make_plan(load(DEFAULT_TOPOLOGY))


def found(**overrides) -> Discovered:
    values = dict(
        image_id="img-1",
        flavor_id="fl-tiny",
        flavor_alt_id="fl-small",
        public_network_id="net-provider",
        public_network_name="provider",
        catalog=CATALOG,
        network_extensions=("external-net", "port-security", "router"),
        microversions={"compute": ("2.1", "2.96"), "block-storage": ("3.0", "3.70")},
        volume_backends=("lvm",),
    )
    values.update(overrides)
    return Discovered(**values)


def parsed(text: str) -> configparser.ConfigParser:
    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(text)
    return conf


# --- tempest.conf ---------------------------------------------------------------------------


def test_config_from_plan_and_discovered_ids(plan, tmp_path: Path) -> None:
    conf = parsed(render(build_config(plan, found(), ADMIN, tmp_path / "ws")))
    for section in (
        "auth",
        "identity",
        "identity-feature-enabled",
        "service_available",
        "compute",
        "compute-feature-enabled",
        "image",
        "network",
        "network-feature-enabled",
        "volume",
        "volume-feature-enabled",
        "validation",
        "placement",
    ):
        assert conf.has_section(section), section
    assert conf["identity"]["uri_v3"] == "http://10.0.0.11:5000/v3"
    assert conf["identity"]["region"] == plan.topology.lab.region == "RegionOne"
    assert conf["identity-feature-enabled"]["api_v3"] == "true"
    assert conf["auth"]["use_dynamic_credentials"] == "true"
    assert conf["auth"]["admin_username"] == "admin"
    assert conf["auth"]["admin_password"] == PASSWORD
    assert conf["auth"]["admin_project_name"] == "admin"
    assert conf["compute"]["image_ref"] == conf["compute"]["image_ref_alt"] == "img-1"
    assert conf["compute"]["flavor_ref"] == "fl-tiny"
    assert conf["compute"]["flavor_ref_alt"] == "fl-small"
    assert conf["compute"]["min_compute_nodes"] == "1"
    assert conf["compute"]["max_microversion"] == "2.96"
    assert conf["network"]["public_network_id"] == "net-provider"
    assert conf["network"]["floating_network_name"] == "provider"
    assert (
        conf["network-feature-enabled"]["api_extensions"] == "external-net, port-security, router"
    )
    assert conf["volume"]["catalog_type"] == "block-storage"
    assert conf["volume"]["backend_names"] == "lvm"
    assert conf["volume"]["max_microversion"] == "3.70"
    assert conf["volume-feature-enabled"]["backup"] == "false"
    assert conf["volume-feature-enabled"]["multi_backend"] == "false"
    assert conf["validation"]["run_validation"] == "false"
    assert "max_microversion" not in conf["placement"]  # not discovered: tempest's default
    # TCG-sized waits
    for section in ("compute", "volume", "image", "network"):
        assert int(conf[section]["build_timeout"]) >= 900, section
    # What a one-compute TCG lab lacks is off; what it has is on.
    features = conf["compute-feature-enabled"]
    for off in ("resize", "cold_migration", "live_migration", "change_password"):
        assert features[off] == "false", off
    for on in ("console_output", "vnc_console", "interface_attach"):
        assert features[on] == "true", on
    workspace = str(tmp_path / "ws")
    assert conf["oslo_concurrency"]["lock_path"].startswith(workspace)
    assert conf["DEFAULT"]["log_dir"].startswith(workspace)


def test_services_the_lab_does_not_run_are_unavailable(plan, tmp_path: Path) -> None:
    available = parsed(render(build_config(plan, found(), ADMIN, tmp_path)))["service_available"]
    for service in ("nova", "glance", "neutron", "cinder"):
        assert available[service] == "true", service
    for service in ("swift", "heat", "barbican", "designate", "octavia", "ironic"):
        assert available[service] == "false", service


def test_service_availability_follows_the_catalog() -> None:
    without_cinder = CATALOG - {"block-storage", "volumev3"}
    assert service_available(without_cinder)["cinder"] is False
    assert service_available(frozenset({"volumev3"}))["cinder"] is True
    assert service_available(CATALOG | {"object-store"})["swift"] is True


def test_volume_catalog_type_prefers_the_official_type() -> None:
    assert volume_catalog_type(CATALOG) == "block-storage"
    assert volume_catalog_type(frozenset({"volumev3"})) == "volumev3"
    assert volume_catalog_type(frozenset()) == "block-storage"


def test_unknown_extensions_mean_all(plan, tmp_path: Path) -> None:
    conf = parsed(render(build_config(plan, found(network_extensions=()), ADMIN, tmp_path)))
    assert conf["network-feature-enabled"]["api_extensions"] == "all"
    assert conf["volume-feature-enabled"]["api_extensions"] == "all"


def test_timeout_option_reaches_every_build_timeout(plan, tmp_path: Path) -> None:
    conf = parsed(render(build_config(plan, found(), ADMIN, tmp_path, timeout=1800)))
    assert {conf[s]["build_timeout"] for s in ("compute", "volume", "image", "network")} == {"1800"}


def test_http_timeout_outlasts_slow_tcg_calls(plan, tmp_path: Path) -> None:
    """tempest's 60 s default made urllib3 send a slow PUT add_router_interface again, which
    failed as "Router already has a port on subnet": the HTTP wait is never under 300 s and
    follows a longer --timeout."""

    def written(**kwargs) -> int:
        conf = parsed(render(build_config(plan, found(), ADMIN, tmp_path, **kwargs)))
        return int(conf["service-clients"]["http_timeout"])

    assert written() == 900
    assert written(timeout=1800) == 1800
    assert written(timeout=120) == 300


def test_alt_flavor_is_the_smallest_other_one() -> None:
    flavors = [
        {"id": "4", "name": "m1.large", "ram": 8192, "vcpus": 4, "disk": 80},
        {"id": "1", "name": "m1.tiny", "ram": 512, "vcpus": 1, "disk": 1},
        {"id": "3", "name": "m1.medium", "ram": 4096, "vcpus": 2, "disk": 40},
        {"id": "2", "name": "m1.small", "ram": 2048, "vcpus": 1, "disk": 20},
    ]
    assert pick_alt_flavor(flavors, "m1.tiny") == "2"
    assert pick_alt_flavor(flavors[1:2], "m1.tiny") == "1"  # only one: the same
    assert pick_alt_flavor([], "m1.tiny") is None


def test_backends_from_cinder_volume_hosts() -> None:
    assert backends_from_hosts(["block1@lvm", "block2@lvm", "block1@ceph#pool"]) == (
        "ceph",
        "lvm",
    )
    assert backends_from_hosts(["block1"]) == ()


def fake_conn(
    *, image: bool = True, extensions_fail: bool = False, login: str | None = "root"
) -> SimpleNamespace:
    """The slice of an openstacksdk connection discover() reads, as plain objects."""

    def items(*things):
        return lambda **query: iter(things)

    def broken(**query):
        raise RuntimeError("404")

    flavors = [
        SimpleNamespace(id=str(i), name=n, ram=r, vcpus=1, disk=d)
        for i, n, r, d in (
            (1, "m1.tiny", 512, 1),
            (2, "m1.small", 2048, 20),
            (3, "m1.large", 8192, 80),
        )
    ]
    catalog = [
        {"type": kind, "endpoints": [{"interface": "public", "region_id": "RegionOne"}]}
        for kind in sorted(CATALOG)
    ] + [{"type": "object-store", "endpoints": [{"interface": "public", "region_id": "Other"}]}]
    access = SimpleNamespace(service_catalog=SimpleNamespace(catalog=catalog))

    def versions(low, high):
        data = SimpleNamespace(min_microversion=low, max_microversion=high)
        return SimpleNamespace(get_endpoint_data=lambda: data)

    return SimpleNamespace(
        image=SimpleNamespace(
            find_image=lambda name: (
                SimpleNamespace(id="img-1", os_admin_user=login) if image else None
            )
        ),
        compute=SimpleNamespace(flavors=items(*flavors), **vars(versions((2, 1), (2, 96)))),
        network=SimpleNamespace(
            find_network=lambda name: SimpleNamespace(id="net-1", name=name),
            extensions=broken if extensions_fail else items(SimpleNamespace(alias="router")),
        ),
        placement=versions(None, None),
        block_storage=SimpleNamespace(
            get_endpoint_data=lambda: SimpleNamespace(
                min_microversion=(3, 0), max_microversion=(3, 70)
            ),
            services=items(
                SimpleNamespace(binary="cinder-scheduler", host="controller"),
                SimpleNamespace(binary="cinder-volume", host="block1@lvm"),
            ),
            backend_pools=items(
                SimpleNamespace(
                    capabilities={"storage_protocol": "iSCSI", "vendor_name": "Open Source"}
                )
            ),
            extensions=broken,
        ),
        session=SimpleNamespace(auth=SimpleNamespace(get_access=lambda session: access)),
    )


def test_discover_reads_day_zero_content_and_service_facts(plan) -> None:
    got = discover(fake_conn(), plan)
    assert (got.image_id, got.flavor_id, got.flavor_alt_id) == ("img-1", "1", "2")
    assert (got.public_network_id, got.public_network_name) == ("net-1", "provider")
    assert got.catalog == CATALOG  # another region's endpoints do not count
    assert got.microversions == {"compute": ("2.1", "2.96"), "block-storage": ("3.0", "3.70")}
    assert got.network_extensions == ("router",)
    assert got.volume_extensions == ()  # could not be read: tempest's default (all)
    assert got.volume_backends == ("lvm",) and got.volume_backup is False
    assert discover(fake_conn(extensions_fail=True), plan).network_extensions == ()
    assert got.ssh_user == "root"
    assert discover(fake_conn(login=None), plan).ssh_user == ""


def test_validation_follows_the_test_images_login(plan, tmp_path: Path) -> None:
    with_login = parsed(render(build_config(plan, found(ssh_user="debian"), ADMIN, tmp_path)))
    validation = with_login["validation"]
    assert validation["run_validation"] == "true"
    assert (validation["image_ssh_user"], validation["auth_method"]) == ("debian", "keypair")
    assert validation["connect_method"] == "floating"  # the host reaches floating IPs only
    assert int(validation["ssh_timeout"]) >= 900
    without = parsed(render(build_config(plan, found(ssh_user=""), ADMIN, tmp_path)))
    assert without["validation"]["run_validation"] == "false"


def test_discover_names_missing_day_zero_content(plan) -> None:
    with pytest.raises(StackseedError, match=r"day-zero content: stackseed-test\n"):
        discover(fake_conn(image=False), plan)


# --- workspace, commands, environment ---------------------------------------------------------


def fake_tempest(root: Path, body: str = "") -> Path:
    """A venv-shaped directory whose `tempest` is a script, and a `stestr` that makes the
    repository (what prepare_workspace runs)."""
    bin_dir = root / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    package = root / "venv" / "lib" / "python3.11" / "site-packages" / "tempest"
    (package / "test_discover").mkdir(parents=True)
    stestr = bin_dir / "stestr"
    stestr.write_text("#!/bin/sh\nmkdir .stestr\n")
    tempest = bin_dir / "tempest"
    tempest.write_text(f"#!{sys.executable}\n{body}")
    for script in (stestr, tempest):
        script.chmod(0o755)
    return tempest


def test_workspace_is_private_and_config_0600(plan, tmp_path: Path) -> None:
    state = LabState(tmp_path / "state" / "stackseed")
    tempest = fake_tempest(tmp_path)
    text = render(build_config(plan, found(), ADMIN, tempest_run.workspace(state)))
    conf = tempest_run.prepare_workspace(state, tempest, text)
    assert conf == state.root / "tempest" / "etc" / "tempest.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    for directory in (state.root, conf.parent.parent, conf.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert (conf.parent.parent / ".stestr").is_dir()
    stestr_conf = (conf.parent.parent / ".stestr.conf").read_text()
    assert "site-packages/tempest/test_discover" in stestr_conf
    # Re-written on the next run, still 0600, with nothing else readable by others.
    tempest_run.prepare_workspace(state, tempest, text)
    for path in conf.parent.parent.rglob("*"):
        assert not path.stat().st_mode & 0o077, path


def test_no_password_on_any_command_line_or_in_the_environment(tmp_path: Path) -> None:
    tempest = tmp_path / "venv" / "bin" / "tempest"
    conf = tmp_path / "ws" / "etc" / "tempest.conf"
    commands = [
        tempest_run.list_command(tempest, conf, tempest_run.selection("^tempest", True), "x"),
        tempest_run.run_command(tempest, conf, tmp_path / "sel.txt", 2, combine=True),
        *tempest_install.install_commands(),
    ]
    for command in commands:
        assert all(PASSWORD not in arg for arg in command), command
    assert "--config-file" in commands[0] and str(conf) in commands[0]
    assert commands[1][-1] == "--combine" and "--subunit" in commands[1]
    env = tempest_run.child_env(conf, {"PATH": "/bin", "OS_PASSWORD": PASSWORD, "OS_CLOUD": "x"})
    assert PASSWORD not in "".join(env.values())
    assert not any(key.startswith("OS_") for key in env)
    assert env["TEMPEST_CONFIG_DIR"] == str(conf.parent)
    assert env["TEMPEST_CONFIG"] == "tempest.conf"


def test_install_is_offline_once_the_marker_is_there(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(tmp_path))
    version = tempest_install.TEMPEST_VERSION
    tempest = tempest_install.tempest_bin()
    tempest.parent.mkdir(parents=True)
    tempest.write_text("")
    tempest_install.marker().write_text(version + "\n")

    def no_network(*args, **kwargs):
        raise AssertionError("an installed tempest must not run pip")

    monkeypatch.setattr(tempest_install.subprocess, "run", no_network)
    assert tempest_install.ensure_tempest() == tempest
    assert tempest.parent.parent.parent == tmp_path / "tempest" / version


def test_failed_install_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(
        tempest_install,
        "install_commands",
        lambda version=None: [[sys.executable, "-c", "print('no route to the index'); exit(1)"]],
    )
    with pytest.raises(StackseedError) as caught:
        tempest_install.ensure_tempest()
    assert "no route to the index" in caught.value.message
    assert "PyPI" in (caught.value.fix or "")
    assert not tempest_install.is_installed()
    assert not tempest_install.venv_dir().exists()


# --- selection and batches --------------------------------------------------------------------

SMOKE_ID = "tempest.api.compute.flavors.test_flavors.FlavorsV2TestJSON.test_get_flavor[id-1f,smoke]"
PLAIN_ID = "tempest.api.compute.flavors.test_flavors.FlavorsV2TestJSON.test_list[id-2e]"
SCENARIO_ID = "tempest.scenario.test_server_basic_ops.TestServerBasicOps.test_basic[id-7f,smoke]"


def test_selection_combines_regex_and_smoke() -> None:
    import re

    smoke = re.compile(tempest_run.selection(tempest_run.DEFAULT_REGEX, True))
    assert smoke.search(SMOKE_ID)
    assert not smoke.search(PLAIN_ID)
    assert not smoke.search(SCENARIO_ID)
    every = re.compile(tempest_run.selection(tempest_run.DEFAULT_REGEX, False))
    assert every.search(SMOKE_ID) and every.search(PLAIN_ID) and not every.search(SCENARIO_ID)
    compute = re.compile(tempest_run.selection("compute", True))
    assert compute.search(SMOKE_ID) and not compute.search(SMOKE_ID.replace("compute", "image"))
    assert not re.compile(tempest_run.selection("test_list", True)).search(PLAIN_ID)
    with pytest.raises(UsageError, match="whitespace"):
        tempest_run.selection("a b", True)
    with pytest.raises(UsageError, match="not a regular expression"):
        tempest_run.selection("(", True)


def test_no_lab_no_workspace(tmp_path: Path, monkeypatch) -> None:
    """Without the lab's clouds.yaml the command stops before writing anything in the state."""
    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cli_tempest, "ensure_tempest", lambda say: tmp_path / "tempest")
    state = tmp_path / "state"
    args = ["--state-dir", str(state), "-t", str(DEFAULT_TOPOLOGY), "--list"]
    assert invoke(cli_tempest.tempest_command, args) == 4
    assert not (state / "stackseed" / "tempest").exists()
    assert invoke(cli_tempest.tempest_command, [*args, "--regex", "a b"]) == 2


def test_listing_keeps_only_test_ids() -> None:
    text = f"{SMOKE_ID}\nsome warning: deprecated option\n\n{PLAIN_ID}\n{SMOKE_ID}\n"
    assert tempest_run.parse_listing(text) == sorted([SMOKE_ID, PLAIN_ID])


def test_batches_keep_classes_whole() -> None:
    ids = ["a.B.test_1", "a.B.test_2[x]", "a.C.test_1", "a.D.test_1", "a.D.test_2"]
    assert tempest_run.batches(ids, 1, keep_going=True) == [sorted(ids)]
    assert tempest_run.batches(ids, 1, keep_going=False) == [
        ["a.B.test_1", "a.B.test_2[x]"],
        ["a.C.test_1"],
        ["a.D.test_1", "a.D.test_2"],
    ]
    assert tempest_run.batches(ids, 2, keep_going=False) == [
        ["a.B.test_1", "a.B.test_2[x]", "a.C.test_1"],
        ["a.D.test_1", "a.D.test_2"],
    ]
    assert tempest_run.batches([], 1, keep_going=False) == []


# --- results ----------------------------------------------------------------------------------


def check_fixture_results(results: Results) -> None:
    rows = {short_id(r.test_id).rsplit(".", 1)[-1]: r for r in results.rows.values()}
    assert set(rows) == {"test_pass", "test_fail", "test_skip", "test_one", "test_two"}
    assert rows["test_pass"].status == "pass"
    assert rows["test_fail"].status == "fail"
    assert rows["test_fail"].reason == "AssertionError: server went to ERROR, not ACTIVE"
    assert "Traceback" in rows["test_fail"].details
    assert rows["test_skip"].status == "skip"
    assert rows["test_skip"].reason == "resize is not available"
    # A class whose setUpClass skipped counts for each of its tests.
    assert rows["test_one"].status == rows["test_two"].status == "skip"
    assert rows["test_one"].reason == "swift is not available"
    assert results.counts() == {"pass": 1, "fail": 1, "skip": 3}
    assert results.not_run() == []
    assert summary_line(results) == "1 passed, 1 failed, 3 skipped"
    assert [r.status for r in results.ordered()] == ["fail", "skip", "skip", "skip", "pass"]


def test_parser_reads_a_real_stestr_stream() -> None:
    check_fixture_results(parse_stream(FIXTURE.read_bytes(), IDS))


def test_parser_takes_the_stream_in_any_pieces_and_skips_noise() -> None:
    data = b"a stray print from a worker\n" + FIXTURE.read_bytes() + b"\xb3 trailing"
    parser, results = StreamParser(), Results(expected=list(IDS))
    for i in range(len(data)):
        for event in parser.feed(data[i : i + 1]):
            results.add(event)
    check_fixture_results(results)
    assert bytes(parser.noise).startswith(b"a stray print")


def test_parser_on_a_fresh_stream_from_stestr() -> None:
    stestr = tempest_install.venv_dir() / "bin" / "stestr"
    if not tempest_install.is_installed():
        pytest.skip("no cached tempest environment (lab tempest --install-only makes it)")
    check_fixture_results(parse_stream(make_stream(stestr), IDS))


def test_secrets_never_reach_reasons_or_json() -> None:
    data = FIXTURE.read_bytes().replace(b"server went to ERROR", b"pw=" + PASSWORD[:17].encode())
    # A changed packet fails its checksum: build the failure with the password from scratch.
    assert PASSWORD not in parse_stream(data, IDS).ordered()[0].reason
    stream = packet("t.C.test_x", "inprogress") + packet(
        "t.C.test_x", None, "traceback", f"Traceback (most recent call last):\nE: {PASSWORD}"
    )
    stream += packet("t.C.test_x", "fail")
    results = Results(expected=["t.C.test_x"], secrets=(PASSWORD,))
    for event in StreamParser().feed(stream):
        results.add(event)
    report = to_json(results, ok=False, seconds=1.0)
    assert PASSWORD not in report
    assert json.loads(report)["tests"][0]["reason"] == "E: ***"


def test_exception_text_is_the_final_exception_with_its_message() -> None:
    trace = textwrap.dedent(
        """\
        Traceback (most recent call last):
          File "x.py", line 1, in f
            raise KeyError
        KeyError

        During handling of the above exception, another exception occurred:

        Traceback (most recent call last):
          File "x.py", line 3, in g
            raise Invalid(msg)
            ^^^^^^^^^^^^^^^^^^
        tempest.lib.exceptions.InvalidCredentials: Invalid Credentials
        Details: no password
        """
    )
    assert exception_text(trace) == (
        "tempest.lib.exceptions.InvalidCredentials: Invalid Credentials Details: no password"
    )
    assert exception_text("just a line\nlast line") == "last line"
    assert exception_text("") == ""


# --- the run, with a stand-in tempest --------------------------------------------------------

STAND_IN = textwrap.dedent(
    """\
    import struct, sys, zlib
    sys.path.insert(0, {support!r})
    from subunit_fixture import packet
    args = sys.argv[1:]
    ids = open(args[args.index("--load-list") + 1]).read().split()
    with open("calls.log", "a") as log:
        log.write(" ".join(args) + "\\n")
    for test_id in ids:
        sys.stdout.buffer.write(packet(test_id, "inprogress"))
        if "fail" in test_id:
            sys.stdout.buffer.write(packet(test_id, None, "traceback", "AssertionError: no"))
        sys.stdout.buffer.write(packet(test_id, "fail" if "fail" in test_id else "success"))
    """
)


def stand_in(tmp_path: Path, plan) -> tuple[Path, Path]:
    tempest = fake_tempest(
        tmp_path, STAND_IN.format(support=str(Path(__file__).parent / "support"))
    )
    state = LabState(tmp_path / "state")
    conf = tempest_run.prepare_workspace(
        state, tempest, render(build_config(plan, found(), ADMIN, tempest_run.workspace(state)))
    )
    return tempest, conf


RUN_IDS = ["t.A.test_ok", "t.B.test_fail", "t.C.test_ok", "t.D.test_ok"]


def test_run_stops_after_the_batch_with_the_first_failure(tmp_path: Path, plan) -> None:
    tempest, conf = stand_in(tmp_path, plan)
    seen = []
    outcome = tempest_run.run_tests(
        tempest, conf, RUN_IDS, progress=lambda row, done, total: seen.append((done, total))
    )
    assert seen == [(1, 4), (2, 4)]
    assert outcome.stopped_early and not outcome.ok
    assert outcome.results.not_run() == ["t.C.test_ok", "t.D.test_ok"]
    assert outcome.results.rows["t.B.test_fail"].reason == "AssertionError: no"
    calls = (conf.parent.parent / "calls.log").read_text().splitlines()
    assert len(calls) == 2 and "--combine" not in calls[0] and "--combine" in calls[1]
    assert all(PASSWORD not in call for call in calls)
    saved = conf.parent.parent / "last-run.subunit"
    for path in conf.parent.parent.rglob("*"):  # the stream, stderr's log, the selection
        assert not path.stat().st_mode & 0o077, path
    assert parse_stream(saved.read_bytes()).counts() == {"pass": 1, "fail": 1, "skip": 0}


def test_keep_going_runs_everything_in_one_tempest(tmp_path: Path, plan) -> None:
    tempest, conf = stand_in(tmp_path, plan)
    outcome = tempest_run.run_tests(tempest, conf, RUN_IDS, concurrency=2, keep_going=True)
    assert outcome.results.counts() == {"pass": 3, "fail": 1, "skip": 0}
    assert not outcome.stopped_early and not outcome.ok and not outcome.errors
    calls = (conf.parent.parent / "calls.log").read_text().splitlines()
    assert len(calls) == 1 and "--concurrency 2" in calls[0]
    passing = tempest_run.run_tests(tempest, conf, ["t.A.test_ok", "t.C.test_ok"])
    assert passing.ok


def test_a_tempest_that_reports_nothing_is_an_error(tmp_path: Path, plan) -> None:
    tempest = fake_tempest(tmp_path, "import sys\nsys.stderr.write('ImportError: boom\\n')\n")
    state = LabState(tmp_path / "state")
    conf = tempest_run.prepare_workspace(state, tempest, "[DEFAULT]\n")
    outcome = tempest_run.run_tests(tempest, conf, RUN_IDS)
    assert not outcome.ok and outcome.stopped_early
    assert "reporting 0 tests" in outcome.errors[0] and "ImportError: boom" in outcome.errors[0]


def test_ctrl_c_keeps_what_ran(tmp_path: Path, plan) -> None:
    tempest, conf = stand_in(tmp_path, plan)

    def interrupt(row, done, total) -> None:
        raise KeyboardInterrupt

    outcome = tempest_run.run_tests(tempest, conf, RUN_IDS, keep_going=True, progress=interrupt)
    assert outcome.interrupted and not outcome.ok
    assert outcome.results.counts()["pass"] == 1
    assert "t.D.test_ok" in outcome.results.not_run()


# --- the command ------------------------------------------------------------------------------


def test_command_json_and_exit_code(tmp_path: Path, plan, monkeypatch) -> None:
    tempest, _ = stand_in(tmp_path / "venv-root", plan)
    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cli_tempest, "ensure_tempest", lambda say: tempest)

    class Conn:
        config = type("Config", (), {"auth": {"username": "admin", "project_name": "admin"}})

        def close(self) -> None:
            pass

    monkeypatch.setattr(cli_tempest, "connect", lambda path, cloud: (Conn(), PASSWORD))
    monkeypatch.setattr(cli_tempest, "discover", lambda conn, plan: found())
    monkeypatch.setattr(cli_tempest, "list_tests", lambda *args: list(RUN_IDS))
    state = tmp_path / "state"
    args = ["--state-dir", str(state), "-t", str(DEFAULT_TOPOLOGY), "--json", "--keep-going"]
    result = CliRunner().invoke(cli_tempest.tempest_command, args)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["counts"] == {"pass": 3, "fail": 1, "skip": 0}
    assert report["tests"][0] == {
        "id": "t.B.test_fail",
        "status": "fail",
        "seconds": 0.0,
        "reason": "AssertionError: no",
        "details": "AssertionError: no",
    }
    conf = state / "stackseed" / "tempest" / "etc" / "tempest.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert parsed(conf.read_text())["auth"]["admin_password"] == PASSWORD
    assert PASSWORD not in result.output
    saved = state / "stackseed" / "tempest" / "last-run.json"
    assert json.loads(saved.read_text())["counts"] == report["counts"]


def test_command_ctrl_c_prints_the_partial_summary(tmp_path: Path, plan, monkeypatch) -> None:
    tempest, _ = stand_in(tmp_path / "venv-root", plan)
    monkeypatch.setenv("STACKSEED_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cli_tempest, "ensure_tempest", lambda say: tempest)
    monkeypatch.setattr(cli_tempest, "configure", lambda lab, cloud_config, timeout: ("", "pw"))
    monkeypatch.setattr(cli_tempest, "list_tests", lambda *args: list(RUN_IDS))

    def interrupt(row, done, total) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_tempest, "show_progress", interrupt)
    args = ["--state-dir", str(tmp_path / "state"), "-t", str(DEFAULT_TOPOLOGY), "--keep-going"]
    result = CliRunner().invoke(cli_tempest.tempest_command, args)
    assert result.exit_code == 130, result.output
    assert "1 test" in result.stdout and "interrupted: 3 tests not run" in result.output


# --- tempest itself, where it is installed ----------------------------------------------------


def test_tempest_reads_the_config_and_lists_the_smoke_api_tests(plan, tmp_path: Path) -> None:
    if not tempest_install.is_installed():
        pytest.skip("no cached tempest environment (lab tempest --install-only makes it)")
    tempest = tempest_install.tempest_bin()
    state = LabState(tmp_path / "state")
    text = render(build_config(plan, found(), ADMIN, tempest_run.workspace(state)))
    conf = tempest_run.prepare_workspace(state, tempest, text)
    ids = tempest_run.list_tests(
        tempest, conf, tempest_run.selection(r"^tempest\.api\.", True), None
    )
    assert len(ids) > 50
    assert all(i.startswith("tempest.api.") and "smoke" in i for i in ids)
    assert any(".volume." in i for i in ids) and any(".object_storage." in i for i in ids)
    # A service the lab does not run: its tests are skipped, not failed (no cloud needed).
    swift = [i for i in ids if "object_storage.test_account_services" in i][:1]
    outcome = tempest_run.run_tests(tempest, conf, swift)
    assert outcome.results.counts() == {"pass": 0, "fail": 0, "skip": 1}, outcome.errors
    assert "swift" in outcome.results.rows[swift[0]].reason.lower()


def test_every_option_written_is_one_tempest_knows(plan, tmp_path: Path) -> None:
    """A misspelt option would be ignored without a word: ask tempest's own option table.
    Plugin services under [service_available] are the only options it may not know."""
    if not tempest_install.is_installed():
        pytest.skip("no cached tempest environment (lab tempest --install-only makes it)")
    conf = tmp_path / "tempest.conf"
    conf.write_text(render(build_config(plan, found(), ADMIN, tmp_path)))
    checker = Path(__file__).parent / "support" / "tempest_options.py"
    python = tempest_install.venv_dir() / "bin" / "python"
    result = subprocess.run(
        [str(python), str(checker), str(conf)], capture_output=True, text=True, check=True
    )
    plugins = {f"unknown service_available.{name}" for name in NOT_RUN if name != "swift"}
    problems = set(result.stdout.split("\n")) - plugins - {""}
    assert problems == {"deprecated identity-feature-enabled.api_v3"}


def test_tempest_builds_its_clients_with_the_lab_timeouts(plan, tmp_path: Path) -> None:
    """What tempest's own config code hands the network, volume, compute and image clients:
    the HTTP wait and the build timeout written above, not its 60 s and 300 s defaults."""
    if not tempest_install.is_installed():
        pytest.skip("no cached tempest environment (lab tempest --install-only makes it)")
    conf = tmp_path / "etc" / "tempest.conf"
    for folder in ("etc", "logs", "lock"):  # tempest opens its log file as it reads the config
        (tmp_path / folder).mkdir()
    conf.write_text(render(build_config(plan, found(), ADMIN, tmp_path, timeout=1200)))
    reader = Path(__file__).parent / "support" / "tempest_values.py"
    python = tempest_install.venv_dir() / "bin" / "python"
    result = subprocess.run(
        [str(python), str(reader), str(conf)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    values = json.loads(result.stdout.strip().splitlines()[-1])
    for service in ("compute", "network", "volume", "image"):
        assert values[service] == {
            "http_timeout": 1200,
            "build_timeout": 1200,
            "build_interval": 3,
        }, service
    assert values["identity"]["http_timeout"] == 1200
