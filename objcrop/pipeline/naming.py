"""The `--opts` and the directory name of one pretraining run of a preset.

The name is `objcrop.records.run_name` of the run's provenance, read from the run's merged
pretraining config (its YAML, the preset's `pretrain.opts`, then the run's own opts), so that the
pipeline and `objcrop pretrain` name a run identically and a record's results.json gives back the
name: `run_name(Provenance.from_dict(results["pretrain"]), config PRETRAIN.BATCH_SIZE)`.
Merging imports objcrop.pretrain's config, which imports the view policies and with them torch
(a few seconds, once per plan); the configs themselves merge in milliseconds.
"""
import os
from typing import Dict, List, Tuple

from objcrop.errors import ConfigError
from objcrop.pipeline.presets import PipelineError, RunSpec
from objcrop.pretrain.engine.results import pretrain_provenance
from objcrop.records import Provenance, run_name


class RunNamer:
    """Opts and names of a preset's pretraining runs (merged configs cached per file and opts)."""

    def __init__(self, dataset: str, preset_opts: List[str]):
        self.dataset = str(dataset)
        self.preset_opts = [str(o) for o in preset_opts or []]
        self._cache: Dict[Tuple[str, Tuple[str, ...]], object] = {}

    def opts(self, spec: RunSpec, seed: int, store: str) -> List[str]:
        """The run's --opts after OUTPUT_DIR, in the order they override each other."""
        opts = ["PRETRAIN.METHOD", spec.method, "VIEWS.POLICY", spec.policy, "DATA.DATASET", self.dataset,
                "DATA.PROPOSALS", store, "PRETRAIN.SEED", str(seed)] + self.preset_opts
        if spec.copy_paste:
            opts += ["VIEWS.COPY_PASTE.ENABLED", "True"]
        if spec.tag:
            opts += ["PRETRAIN.TAG", spec.tag]  # the run's own report row
        return opts

    @staticmethod
    def config_arg(config_file: str) -> str:
        """A YAML the user named by a path relative to here stays found when the stage runs elsewhere."""
        return os.path.abspath(config_file) if os.path.isfile(config_file) else config_file

    def merged(self, config_file: str, opts: List[str]):
        from objcrop.config import merge_config
        from objcrop.pretrain.config import get_pretrain_cfg

        key = (config_file, tuple(opts))
        if key not in self._cache:
            try:
                self._cache[key] = merge_config(get_pretrain_cfg, self.config_arg(config_file), opts)
            except ConfigError as e:
                raise PipelineError(f"pretraining config of a run ({config_file} with the preset's opts): {e}") from e
        return self._cache[key]

    def name(self, spec: RunSpec, opts: List[str]) -> str:
        cfg = self.merged(spec.config_file, opts)
        return run_name(provenance(cfg, spec.proposals), int(cfg.PRETRAIN.BATCH_SIZE))


def provenance(cfg, proposals: str) -> Provenance:
    """The provenance a pretraining run with this merged config records (proposals: the source's name):
    the trainer's own `pretrain_provenance`, so that the two never name a run differently (the released
    geometry's `@released`, DiLo's `+copy-paste-dilo`). That module imports no torch."""
    return pretrain_provenance(cfg, proposals)
