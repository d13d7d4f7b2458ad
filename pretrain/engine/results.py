"""A pretraining run's record: its provenance, its default run directory and results.json.

All three go through objcrop.records (the one results.json schema, Provenance and run_name of
every stage); this module only says how a pretraining config maps onto them.
"""
import os
import time
from typing import Optional

from objcrop import records
from objcrop.config import CfgNode, config_hash
from objcrop.errors import ObjcropError
from objcrop.pretrain.engine.hooks import HookBase, TrainingDiverged


def view_policy(cfg: CfgNode) -> str:
    """The view policy as runs name it, so that each variant gets its own report row:

    * the released crop geometry (VIEWS.GEOMETRY released, which also samples one item per box) marks
      a box policy with `@released` (`obj-obj-dilate@released`): `-` already joins the run tag
      (`obj-obj-dilate-short`) and `+` a composed transform, while `@` is safe in directory and SLURM
      job names; the random policy uses no boxes, so the geometry does not change it;
    * DiLo copy-paste on top is part of the policy, named as `CopyPaste.name` names it: `+copy-paste`
      for the shared variant the study measured, `+copy-paste-dilo` for DiLo's per-view reference mode.

    Runs of objcrop's geometry with shared copy-paste (every preset before issue 18) keep their names.
    The run tag (PRETRAIN.TAG) is a field of its own."""
    if "VIEWS" not in cfg or "POLICY" not in cfg.VIEWS:
        return "random"
    views = cfg.VIEWS
    name = str(views.POLICY)
    if str(views.get("GEOMETRY", "objcrop")) != "objcrop" and name != "random":
        name += f"@{views.GEOMETRY}"
    if "COPY_PASTE" in views and views.COPY_PASTE.ENABLED:
        mode = str(views.COPY_PASTE.get("MODE", "shared"))
        name += "+copy-paste" + ("" if mode == "shared" else f"-{mode}")
    return name


def proposals_label(cfg: CfgNode, proposals: str) -> str:
    """The proposals as runs name them: a store's name, with `-top<k>` when DATA.PROPOSALS_TOPK trains on
    its k best-scored boxes only (`selective-search-top10`), so that ranked and unranked proposals of one
    method get report rows of their own. Annotated boxes ("gt") and none have no ranking to name."""
    k = int(cfg.DATA.get("PROPOSALS_TOPK", 0)) if "DATA" in cfg else 0
    return f"{proposals}-top{k}" if k > 0 and proposals not in ("none", "gt") else proposals


def pretrain_provenance(cfg: CfgNode, proposals: str) -> records.Provenance:
    """The `"pretrain"` block of this run's results.json, checkpoints and everything made from them;
    `proposals` is the box source's name (proposals_label adds the top-k)."""
    p = cfg.PRETRAIN
    return records.Provenance(method=p.METHOD, policy=view_policy(cfg), proposals=proposals_label(cfg, proposals),
                              epochs=int(p.EPOCHS), arch=p.ARCH, dataset=cfg.DATA.DATASET, seed=int(p.SEED),
                              tag=str(p.get("TAG", "")),
                              stem=records.check_stem(str(p.get("STEM", records.RESNET_STEMS[0]))))


def default_run_dir(cfg: CfgNode, proposals: str) -> str:
    """output/pretrain/<records.run_name>: method, policy and tag, proposals, arch, batch, epochs, data, seed."""
    return os.path.join("output", "pretrain", records.run_name(pretrain_provenance(cfg, proposals), cfg.PRETRAIN.BATCH_SIZE))


# Keys that decide how a run is carried out, never what it computes: where it writes, how often it
# checkpoints and logs, and how many processes load its data (every sample is seeded by its index, not
# by the worker that makes it). A run that differs from a finished one only in these is the same run.
# tests/test_pretrain_execution_keys.py trains with every one of them changed and compares the weights
# bit for bit, so a key that does change the computation cannot stay on this list.
EXECUTION_ONLY_KEYS = ("OUTPUT_DIR", "DATA.NUM_WORKERS", "DATA.IMAGE_CACHE_MB", "CHECKPOINT.PERIOD",
                       "CHECKPOINT.EPOCH_PERIOD", "CHECKPOINT.KEEP_LAST", "LOG.PERIOD", "LOG.PRINT_PERIOD")


def computation_hash(cfg: CfgNode) -> str:
    """config_hash without the EXECUTION_ONLY_KEYS: equal for two configs that train the same weights."""
    return config_hash(cfg, ignore=EXECUTION_ONLY_KEYS)


def completed_results(output_dir: str, cfg: CfgNode) -> Optional[dict]:
    """results.json of this run directory if it says this very computation finished, model_final.pth
    beside it: the same config, or one that differs only in EXECUTION_ONLY_KEYS (records written
    before `computation_hash` existed match by their full `config_hash` only)."""
    path = os.path.join(output_dir, "results.json")
    if not os.path.exists(path) or not os.path.exists(os.path.join(output_dir, "model_final.pth")):
        return None
    try:
        done = records.read_results(path)
    except ObjcropError:  # unreadable or not a record: train again
        return None
    if done.get("status") != "ok":
        return None
    same = done.get("config_hash") == config_hash(cfg) or done.get("computation_hash") == computation_hash(cfg)
    return done if same else None


class ResultsWriter(HookBase):
    """results.json: removed on a fresh start; written "ok" after a normal end (after model_final.pth,
    so a results.json with status ok means the weights are there) or "failed" when the run diverged.
    Rank 0 only; the trainer returns the record it wrote."""

    @property
    def path(self) -> str:
        return os.path.join(self.trainer.output_dir, "results.json")

    def before_train(self):
        if self.trainer.state.iteration == 0 and os.path.exists(self.path):
            os.remove(self.path)

    def after_train(self):
        t = self.trainer
        if t.error is None:
            # over the whole run, every session of it: a session resumed from the final checkpoint (a
            # finished run whose config gained a key since) trains nothing and must not report 0 img/s
            throughput = t.state.images_seen / max(1e-9, t.state.train_time_s)
            t.results = self.write("ok", throughput=round(throughput, 3))
            t.logger.info(f"done: iter={t.state.iteration}, {t.state.images_seen} images seen, {throughput:.1f} img/s; "
                          f"weights in {t.final_weights}")
        elif isinstance(t.error, TrainingDiverged):
            t.results = self.write("failed", throughput=None, error=str(t.error))

    def write(self, status: str, **fields) -> dict:
        t, s = self.trainer, self.trainer.state
        recent = list(s.recent_losses)
        record = records.results(
            "pretrain", status, t.provenance, seed=int(t.cfg.PRETRAIN.SEED), config_hash=config_hash(t.cfg),
            computation_hash=computation_hash(t.cfg),
            wall_time_s=round(time.perf_counter() - t.wall_start, 3), images_seen=int(s.images_seen),
            iterations=int(s.iteration), throughput=fields.pop("throughput"),
            final_loss=(sum(recent) / len(recent)) if recent else None,
            batch_size=int(t.cfg.PRETRAIN.BATCH_SIZE), world_size=t.ctx.world_size, device=device_name(t.ctx.device),
            train_time_s=round(s.train_time_s, 3), code_history=s.code_history,
            code=s.code_history[-1], **fields)  # this session's code, read once at setup (trainer.setup)
        records.write_results(t.output_dir, record)
        return record


def device_name(device) -> str:
    """What a run computed on (a torch.device), for its record: the CUDA device's name, or the CPU's model
    and widest vector extension (records.cpu_kind: which float kernels it ran) and this process's torch
    threads (the registered comparison pairs its arms' seeds by kind of device, docs/preregistration.md).
    torch is imported here: the pipeline names runs with this module, without it."""
    import torch

    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {records.cpu_kind()}, {torch.get_num_threads()} thread(s)"
