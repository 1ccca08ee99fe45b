"""Horizon's AngularJS shim (elements/stackseed-controller, docs/horizon.md): it defines
angular.lowercase/uppercase only where AngularJS lacks them; Debian's own angular-gettext fails
without it and works with it; Horizon is told to load it; the image build looks for it in the
compressed scripts by a name the shim really sets (code, not a comment the minifier drops)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from builder.paths import cache_root

ELEMENT = REPO / "elements" / "stackseed-controller"
DASHBOARD = ELEMENT / "static" / "usr" / "lib" / "python3" / "dist-packages" / "openstack_dashboard"
SHIM = DASHBOARD / "static" / "stackseed" / "angular-compat.js"
ENABLED = DASHBOARD / "local" / "enabled" / "_9990_stackseed_angular_compat.py"
REBUILD = ELEMENT / "post-install.d" / "81-stackseed-horizon-compat"
RUNNER = REPO / "tests" / "support" / "angular_compat.cjs"
GETTEXT = "usr/share/javascript/angular.js/angular-gettext.js"
SAMPLES_LOWER = ["mixed case", 42, None]
SAMPLES_UPPER = ["MIXED CASE", 42, None]

NEEDS_NODE = pytest.mark.skipif(shutil.which("node") is None, reason="apt-get install nodejs")


def run_page(*scripts: Path, angular_has_helpers: bool = False) -> dict:
    """What loading these scripts in order does to an `angular` (tests/support/angular_compat)."""
    flag = ["--angular-has-helpers"] if angular_has_helpers else []
    done = subprocess.run(
        ["node", str(RUNNER), *flag, *map(str, scripts)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def debian_angular_gettext(tmp_path: Path) -> Path:
    """angular-gettext.js from Debian trixie's libjs-angular-gettext, out of the build's .deb
    cache (or apt's); skips when neither holds it."""
    places = [cache_root() / "debs" / "trixie", Path("/var/cache/apt/archives")]
    debs = [d for place in places for d in sorted(place.glob("libjs-angular-gettext_*.deb"))]
    if not debs or shutil.which("dpkg-deb") is None:
        pytest.skip("no libjs-angular-gettext .deb cached (build-images --role controller)")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp_path)], check=True, timeout=60)
    return tmp_path / GETTEXT


@NEEDS_NODE
def test_shim_adds_the_helpers_angularjs_1_7_removed() -> None:
    page = run_page(SHIM)
    assert page["added"] == ["lowercase", "uppercase"]
    # AngularJS 1.6's behaviour: strings converted, anything else handed back as it came.
    assert page["lowercase"] == SAMPLES_LOWER
    assert page["uppercase"] == SAMPLES_UPPER


@NEEDS_NODE
def test_shim_leaves_an_angularjs_that_has_them_alone() -> None:
    page = run_page(SHIM, angular_has_helpers=True)
    assert page["added"] == []
    assert page["lowercase"] == page["uppercase"] == "own"


@NEEDS_NODE
def test_debian_angular_gettext_needs_the_shim(tmp_path: Path) -> None:
    """The console error of the images panel, reproduced with Debian's file: the translate
    directive's factory throws without the shim and makes the directive with it (loaded after
    angular-gettext, as Horizon's ADD_JS_FILES puts it)."""
    gettext = debian_angular_gettext(tmp_path)
    assert run_page(gettext)["translate"] == {
        "error": "TypeError: angular.lowercase is not a function"
    }
    assert run_page(gettext, SHIM)["translate"] == {"restrict": "AE", "terminal": True}


def test_horizon_is_told_to_load_the_shim() -> None:
    """An enabled file with no DASHBOARD or PANEL is skipped by Horizon unless it sets FEATURE;
    its ADD_JS_FILES entry is a path under a static directory Horizon collects
    (openstack_dashboard/static)."""
    settings: dict = {}
    exec(compile(ENABLED.read_text(), str(ENABLED), "exec"), settings)
    assert settings["FEATURE"] is True
    assert settings["ADD_JS_FILES"] == ["stackseed/angular-compat.js"]
    for entry in settings["ADD_JS_FILES"]:
        assert (DASHBOARD / "static" / entry).is_file(), entry
    # local/enabled must be a package for `from openstack_dashboard.local import enabled`.
    assert (ENABLED.parent / "__init__.py").is_file()


@NEEDS_NODE
def test_the_build_looks_for_a_name_the_shim_sets() -> None:
    found = re.search(r"^marker=(\w+)$", REBUILD.read_text(), re.MULTILINE)
    assert found, f"{REBUILD.name} sets no marker="
    # angular_compat.cjs reports `added` from window.STACKSEED_ANGULAR_COMPAT: present only
    # when the shim's code (not a comment, which the minifier strips) sets that name.
    assert found.group(1) == "STACKSEED_ANGULAR_COMPAT"
    assert run_page(SHIM)["added"] is not None


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="apt-get install shellcheck")
def test_rebuild_script_is_shellcheck_clean() -> None:
    done = subprocess.run(
        ["shellcheck", "-s", "bash", str(REBUILD)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


PIE = DASHBOARD / "static" / "stackseed" / "pie-chart-nodata.js"
PIE_ENABLED = DASHBOARD / "local" / "enabled" / "_9991_stackseed_pie_chart_nodata.py"
PIE_RUNNER = REPO / "tests" / "support" / "pie_chart_nodata.cjs"


def run_pie(*flags: str) -> dict:
    done = subprocess.run(
        ["node", str(PIE_RUNNER), str(PIE), *flags],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


@NEEDS_NODE
def test_pie_guard_leaves_out_only_charts_horizon_would_draw_with_nan() -> None:
    """The hypervisors panel's PCPU chart of a node without PCPU inventory has data-used=""
    (Django's widthratio of None and None): left out, its tile hidden. Numbers, 0 included, and
    the [used, true] pair of an unlimited quota are drawn by Horizon as before."""
    page = run_pie()
    assert page["drawn"] == [42, 0, 100, [5, True]]
    assert page["hidden"] == ["", None, "abc"]
    assert page["state"] == {"wrapped": True, "hidden": 3}
    assert page["sameThis"] is True  # Horizon's init still runs as a method of its object


@NEEDS_NODE
def test_pie_guard_does_nothing_without_horizons_pie_charts() -> None:
    assert run_pie("--no-horizon")["state"] == {"wrapped": False, "hidden": 0}


def test_horizon_is_told_to_load_the_pie_guard() -> None:
    settings: dict = {}
    exec(compile(PIE_ENABLED.read_text(), str(PIE_ENABLED), "exec"), settings)
    assert settings["FEATURE"] is True
    assert settings["ADD_JS_FILES"] == ["stackseed/pie-chart-nodata.js"]
    assert PIE.is_file()


def test_the_build_looks_for_a_name_the_pie_guard_sets() -> None:
    found = re.search(r"^pie_marker=(\w+)$", REBUILD.read_text(), re.MULTILINE)
    assert found, f"{REBUILD.name} sets no pie_marker="
    # Set in code (a property of window), not only named in the header comment.
    assert f"window.{found.group(1)} =" in PIE.read_text()
