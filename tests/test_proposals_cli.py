"""`objcrop proposals compute`'s config idiom: defaults <- YAML <- flags <- --opts, clear errors, and a
STORE.config.yaml beside the store that, passed back as --config-file, writes the identical store."""
import pytest
import yaml

from objcrop.cli import main as objcrop_main
from objcrop.errors import ConfigError
from objcrop.pretrain.proposals import cli
from objcrop.pretrain.proposals.config import get_proposals_cfg, method_spec
from objcrop.pretrain.proposals.store import ProposalStore


def _cfg(argv):
    return cli.compute_cfg(cli._parser().parse_args(["compute"] + argv))


REQUIRED = ["--dataset", "synth:d:train", "--method", "gt", "--out", "s.ocp"]


def test_yaml_then_flags_then_opts(tmp_path):
    defaults = get_proposals_cfg()
    preset = tmp_path / "preset.yaml"
    values = {"FILTER": {"TOP_K": 5, "NMS": 0.5}, "PROPOSALS": {"SUPERPIXELS": defaults.PROPOSALS.SUPERPIXELS + 1},
              "COMPUTE": {"WORKERS": defaults.COMPUTE.WORKERS + 1}}
    preset.write_text(yaml.safe_dump(values))
    opts_superpixels = defaults.PROPOSALS.SUPERPIXELS + 2
    cfg = _cfg(["--config-file", str(preset), "--top-k", "7", "--superpixels", "1"] + REQUIRED
               + ["--opts", "PROPOSALS.SUPERPIXELS", str(opts_superpixels)])
    assert cfg.FILTER.TOP_K == 7  # a flag given explicitly beats the file
    assert cfg.FILTER.NMS == values["FILTER"]["NMS"]  # the file beats the default
    assert cfg.PROPOSALS.SUPERPIXELS == opts_superpixels  # --opts beats the file and the flag
    assert cfg.COMPUTE.WORKERS == values["COMPUTE"]["WORKERS"]  # a flag left out leaves the file alone
    assert cfg.DATA.DATASET == "synth:d:train" and cfg.PROPOSALS.METHOD == "gt" and cfg.OUTPUT_FILE == "s.ocp"
    spec = method_spec(cfg)
    assert (spec.filter.top_k, spec.filter.nms_iou, spec.superpixels) == (7, values["FILTER"]["NMS"], opts_superpixels)


def test_unknown_key_and_missing_values_are_clear_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--opts: .*FILTER.TOPK"):
        _cfg(REQUIRED + ["--opts", "FILTER.TOPK", "3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("PROPOSALS:\n  SS_MODES: fast\n")
    assert objcrop_main(["proposals", "compute", "--config-file", str(bad)] + REQUIRED) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"objcrop proposals: error: {bad}") and "SS_MODES" in err and err.count("\n") == 1
    with pytest.raises(ConfigError, match=r"PROPOSALS.METHOD \(--method\)"):
        _cfg(["--dataset", "synth:d:train", "--out", "s.ocp"])
    with pytest.raises(ConfigError, match="FILTER.AREA"):
        _cfg(REQUIRED + ["--opts", "FILTER.AREA", "[0.1]"])


def test_written_config_repeats_the_store(synth_dir, tmp_path):
    first, again = str(tmp_path / "first.ocp"), str(tmp_path / "again.ocp")
    argv = ["compute", "--dataset", f"synth:{synth_dir}:train", "--method", "saliency-spectral", "--out", first,
            "--limit", "4", "--max-side", "64", "--opts", "FILTER.TOP_K", "3"]
    assert cli.main(argv) == 0
    written = cli.config_path(first)
    text = open(written).read()
    assert yaml.safe_load(text)["FILTER"]["TOP_K"] == 3 and yaml.safe_load(text)["DATA"]["LIMIT"] == 4
    assert cli.main(["compute", "--config-file", written, "--opts", "OUTPUT_FILE", again]) == 0
    assert open(first, "rb").read() == open(again, "rb").read()  # the store, meta included, byte for byte
    assert open(cli.config_path(again)).read() == text.replace(first, again)
    assert ProposalStore.open(again).meta["params"]["filter"]["top_k"] == 3


def test_a_yaml_integer_for_a_float_filter_writes_the_flags_store(synth_dir, tmp_path):
    """YAML says `MIN_SIZE: 8` where the flag gave 8.0: the store's meta (and its resume check) must not
    tell them apart."""
    by_flag, by_yaml = str(tmp_path / "flag.ocp"), str(tmp_path / "yaml.ocp")
    common = ["compute", "--dataset", f"synth:{synth_dir}:train", "--method", "gt", "--limit", "3"]
    assert cli.main(common + ["--out", by_flag, "--min-size", "8"]) == 0
    preset = tmp_path / "min8.yaml"
    preset.write_text("FILTER:\n  MIN_SIZE: 8\n")
    assert cli.main(common + ["--out", by_yaml, "--config-file", str(preset)]) == 0
    assert open(by_flag, "rb").read() == open(by_yaml, "rb").read()


def test_packaged_preset_loads_by_name():
    cfg = _cfg(["--config-file", "proposals/selective_search.yaml", "--dataset", "d", "--out", "s.ocp"])
    assert cfg.PROPOSALS.METHOD == "selective-search"


def test_top_k_first_flag_sets_its_key_and_reaches_the_filter():
    assert not _cfg(REQUIRED).FILTER.TOP_K_FIRST and not method_spec(_cfg(REQUIRED)).filter.top_k_first
    cfg = _cfg(REQUIRED + ["--top-k", "10", "--top-k-first"])
    assert cfg.FILTER.TOP_K_FIRST is True
    assert (method_spec(cfg).filter.top_k, method_spec(cfg).filter.top_k_first) == (10, True)
    assert "method's raw ranking" in cli._parser()._subparsers._group_actions[0].choices["compute"].format_help()
