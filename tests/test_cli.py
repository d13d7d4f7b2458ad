import subprocess
import sys

from objcrop.cli import STAGES, main


def test_help_lists_every_stage(capsys):
    main([])
    out = capsys.readouterr().out
    for stage in STAGES:
        assert stage in out


def test_console_script_runs_as_module():
    out = subprocess.run([sys.executable, "-m", "objcrop", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("objcrop ")


def test_config_unknown_key_names_the_key(tmp_path):
    import pytest

    from objcrop.config import CfgNode, merge_config
    from objcrop.errors import ConfigError

    def defaults():
        c = CfgNode()
        c.A = 1
        return c

    bad = tmp_path / "bad.yaml"
    bad.write_text("B: 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*B"):
        merge_config(defaults, str(bad), None)
    with pytest.raises(ConfigError, match="--opts.*C"):
        merge_config(defaults, None, ["C", "3"])
    assert merge_config(defaults, None, ["A", "5"]).A == 5


def test_atomic_write_gives_normal_permissions(tmp_path):
    import os
    import stat

    from objcrop.io import read_json, write_json_atomic

    path = tmp_path / "r.json"
    write_json_atomic(str(path), {"a": 1})
    assert read_json(str(path)) == {"a": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind
