"""The probe's config idiom: defaults <- YAML <- flags <- --opts, clear errors, and a config.yaml that
repeats the run."""
import json

import pytest
import yaml

from objcrop.cli import main as objcrop_main
from objcrop.cli import run_stage_main
from objcrop.config import CfgNode, packaged_config
from objcrop.datasets import load_dataset
from objcrop.errors import ConfigError
from objcrop.pretrain import probe
from objcrop.pretrain.cli_flags import flag_opts
from objcrop.pretrain.probe import get_probe_cfg, native_size, setup_cfg
from objcrop.pretrain.probe.config import PROBE_FLAGS


def _cfg(argv):
    return setup_cfg(probe.build_parser().parse_args(argv))


REQUIRED = ["--weights", "random", "--dataset-train", "a", "--dataset-test", "b", "--out", "o"]


def test_yaml_then_flags_then_opts(tmp_path):
    defaults = get_probe_cfg()
    preset = tmp_path / "preset.yaml"
    yaml_values = {"LINEAR": {"EPOCHS": defaults.LINEAR.EPOCHS + 1, "LR": defaults.LINEAR.LR * 2},
                   "KNN": {"K": defaults.KNN.K + 1}, "FEATURES": {"NUM_WORKERS": defaults.FEATURES.NUM_WORKERS + 1}}
    preset.write_text(yaml.safe_dump(yaml_values))
    flag_epochs, opts_k = defaults.LINEAR.EPOCHS + 2, defaults.KNN.K + 2
    cfg = _cfg(["--config-file", str(preset), "--epochs", str(flag_epochs), "--knn-k", "1"] + REQUIRED
               + ["--opts", "KNN.K", str(opts_k)])
    assert cfg.LINEAR.EPOCHS == flag_epochs  # a flag given explicitly beats the file
    assert cfg.LINEAR.LR == yaml_values["LINEAR"]["LR"]  # the file beats the default
    assert cfg.KNN.K == opts_k  # --opts beats the file and the flag
    # a flag left out leaves the file's value alone (its argparse default is not the key's default)
    assert cfg.FEATURES.NUM_WORKERS == yaml_values["FEATURES"]["NUM_WORKERS"]
    assert cfg.PROBE.WEIGHTS == "random" and cfg.DATA.TRAIN == "a" and cfg.OUTPUT_DIR == "o"
    # without the file, the defaults stand under the flags
    assert _cfg(REQUIRED).LINEAR.LR == defaults.LINEAR.LR


def test_every_flag_sets_its_key_and_text_stays_text():
    args = probe.build_parser().parse_args(["--cache-dir", "None", "--arch", "1"] + REQUIRED)
    opts = flag_opts(args, PROBE_FLAGS)
    cfg = _cfg(["--cache-dir", "None", "--arch", "1"] + REQUIRED)
    assert cfg.FEATURES.CACHE_DIR == "None" and cfg.PROBE.ARCH == "1"  # not None, not an int
    assert opts[0::2] == [f.key for f in PROBE_FLAGS if f.flag in ("--weights", "--dataset-train", "--dataset-test",
                                                                   "--out", "--arch", "--cache-dir")]
    keys = [f.key for f in PROBE_FLAGS]
    assert len(set(keys)) == len(keys)  # one flag per key
    for key in keys:  # every flag names a key that exists
        node = get_probe_cfg()
        for part in key.split("."):
            node = node[part]


def test_unknown_key_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--opts: .*LINEAR.EPOCH\\b"):
        _cfg(REQUIRED + ["--opts", "LINEAR.EPOCH", "3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("KNN:\n  NEIGHBOURS: 3\n")
    with pytest.raises(ConfigError) as e:
        _cfg(["--config-file", str(bad)] + REQUIRED)
    assert str(bad) in str(e.value) and "NEIGHBOURS" in str(e.value)
    # through the console script: one line on stderr, exit code 2
    assert objcrop_main(["probe", "--config-file", str(bad)] + REQUIRED) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"objcrop probe: error: {bad}") and err.count("\n") == 1


def test_missing_required_key_names_key_and_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"PROBE.WEIGHTS \(--weights\)"):
        _cfg(REQUIRED[2:])
    with pytest.raises(ConfigError, match="PROBE.DEVICE"):
        _cfg(REQUIRED + ["--opts", "PROBE.DEVICE", "tpu"])


def test_written_config_is_resolved_and_repeats_the_run(synth_dir, tmp_path):
    """config.yaml holds what ran (DATA.IMAGE_SIZE resolved) and, as --config-file, gives the same cfg and mAP."""
    out, again, cache = tmp_path / "first", tmp_path / "again", tmp_path / "cache"
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({"LINEAR": {"EPOCHS": 3}, "FEATURES": {"NUM_WORKERS": 0}}))
    argv = ["--config-file", str(preset), "--weights", "random", "--arch", "resnet18", "--dataset-train",
            f"synth:{synth_dir}:train", "--dataset-test", f"synth:{synth_dir}:val", "--out", str(out),
            "--cache-dir", str(cache), "--opts", "KNN.K", "5"]
    assert run_stage_main(probe.main, argv, "objcrop probe") == 0
    written = CfgNode(yaml.safe_load((out / "config.yaml").read_text()))
    train_records, _ = load_dataset(f"synth:{synth_dir}:train")
    assert written.DATA.IMAGE_SIZE == native_size(train_records) > 0  # "auto" is written as the size used
    assert written.LINEAR.EPOCHS == 3 and written.KNN.K == 5 and written.PROBE.ARCH == "resnet18"
    first = json.loads((out / "results.json").read_text())

    rerun = ["--config-file", str(out / "config.yaml"), "--opts", "OUTPUT_DIR", str(again)]
    assert _cfg(rerun).dump() == written.clone().dump().replace(str(out), str(again))
    assert run_stage_main(probe.main, rerun, "objcrop probe") == 0
    assert (again / "config.yaml").read_text() == (out / "config.yaml").read_text().replace(str(out), str(again))
    second = json.loads((again / "results.json").read_text())
    assert (second["mAP"], second["knn_mAP"]) == (first["mAP"], first["knn_mAP"])


def test_packaged_preset_loads_by_name():
    cfg = _cfg(["--config-file", "probe/paper.yaml"] + REQUIRED)
    assert cfg.DATA.IMAGE_SIZE == yaml.safe_load(open(packaged_config("probe/paper.yaml")))["DATA"]["IMAGE_SIZE"]
