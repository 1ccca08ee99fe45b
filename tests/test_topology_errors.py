"""Each malformed topology is refused with a sentence naming the problem, and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BAD, run_lab


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path} needs a '# expect: ' first line"
    return first.removeprefix("# expect: ")


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 15


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_topology_is_refused(path: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    output = tmp_path / "seeds"
    result = run_lab("seed", "--all", "-o", str(output), "-t", str(path), state_dir=state)
    assert result.returncode == 3, result.stderr
    assert _expected(path) in result.stderr
    assert str(path) in result.stderr  # names the file
    assert "Traceback" not in result.stderr + result.stdout
    assert "fix:" in result.stderr
    assert not output.exists()
    assert not state.exists()


def test_error_names_the_line(tmp_path: Path) -> None:
    path = next(p for p in BAD if p.stem == "duplicate-ip")
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "10.0.0.31" in text)
    result = run_lab(
        "seed", "--all", "-o", str(tmp_path / "o"), "-t", str(path), state_dir=tmp_path / "s"
    )
    # The duplicate is reported at the second node that uses the address.
    assert f"{path}:" in result.stderr
    reported = int(result.stderr.split(f"{path}:")[1].split(":")[0])
    assert reported > line


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = run_lab(
        "seed",
        "--all",
        "-o",
        str(tmp_path / "o"),
        "-t",
        str(tmp_path / "nope.yaml"),
        state_dir=tmp_path / "s",
    )
    assert result.returncode == 3
    assert "nope.yaml: cannot read the topology" in result.stderr
    assert "lab init" in result.stderr
