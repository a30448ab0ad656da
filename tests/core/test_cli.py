from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata

import pytest
from duoseg.apps.cli import main

from tests.conftest import FIXTURE_PLUGINS

EXAMPLE_DISTRIBUTION = "duoseg-example-plugin"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duoseg.apps.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_plugins_lists_every_kind_and_provenance(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"kind": "network", "name": "net2"}.items() <= next(
        r for r in rows if r["name"] == "net2"
    ).items()
    assert all(
        set(r) == {"kind", "name", "summary", "plugin", "distribution", "version"} for r in rows
    )


def test_plugins_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(re.match(r"network +net1 ", line) and "[duoseg " in line for line in lines)


def test_the_example_plugin_is_listed_with_its_distribution() -> None:
    try:
        metadata.distribution(EXAMPLE_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pytest.fail("install it first: pip install -e examples/custom_plugin (see README)")
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    mine = {
        (r["kind"], r["name"])
        for r in json.loads(result.stdout)
        if r["distribution"] == EXAMPLE_DISTRIBUTION
    }
    assert {("network", "resunet3d"), ("loss", "tversky")} <= mine


def test_a_broken_plugin_is_a_one_line_error_without_traceback() -> None:
    env = {"PYTHONPATH": os.pathsep.join([str(FIXTURE_PLUGINS / "broken_import"), *sys.path])}
    result = run_cli("plugins", env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("duoseg: error: could not import plugin 'broken'")
    assert "duoseg-broken-import 0.1.0" in result.stderr
    verbose = run_cli("--verbose", "plugins", env=env)
    assert "Traceback" in verbose.stderr and verbose.returncode == 2


def test_the_console_script_is_installed() -> None:
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "duoseg"), "plugins"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "dice_weighted" in result.stdout


@pytest.mark.parametrize(
    ("flags", "new_form"),
    [
        (["--net1-only"], "--method-option net1_only=true"),
        (["--tta"], "--method-option flip_tta=true"),
        (["--threshold", "0.3"], "--method-option threshold=0.3"),
        (["--margin-mm", "5"], "--method-option margin_mm=5"),
    ],
)
def test_flags_that_became_method_options_show_the_new_form(flags, new_form, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "run", "in.nii.gz", "out", *flags])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.endswith(f"{flags[0]} is now an option of the two_stage method: {new_form}")
