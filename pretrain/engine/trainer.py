"""The pretraining loop: one SSL method, one view policy, DDP or a single process, resumable.

`PretrainTrainer(cfg, ctx, logger).train(resume)` builds the data, method and optimiser, restores
the newest valid checkpoint when asked and runs a short loop; everything else a run does arrives
as hooks (engine/hooks.py, in detectron2's HookBase shape): the divergence guard, counters,
metrics.jsonl / TensorBoard, the progress bar, checkpoints and model_final.pth
(engine/checkpoint.py) and results.json (engine/results.py). Rank 0 alone writes files.
"""
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from objcrop.config import CfgNode
from objcrop.errors import ConfigError, DatasetError
from objcrop.pretrain import distributed as du
from objcrop.pretrain.engine.checkpoint import CheckpointHook, Checkpointer, restore_training_state
from objcrop.pretrain.engine.data import (BoxSource, DatasetBackgrounds, ShardedResumableSampler, ViewPairDataset, box_items,
                                          build_loader, check_enough_data, item_mode, iterations_per_epoch)
from objcrop.pretrain.engine.hooks import DivergenceGuard, HookBase, MetricsWriter, ProgressBar, StepCounters
from objcrop.pretrain.engine.optim import build_optimisation, lr_at, scaled_lr, uses_autocast, uses_channels_last
from objcrop.pretrain.engine.results import ResultsWriter, completed_results, default_run_dir, pretrain_provenance
from objcrop.pretrain.methods import METHODS
from objcrop.records import code_history, code_identity


@dataclass
class RunState:
    """Where a run stands (the next batch to train: epoch, batch_in_epoch) and the counters a resume
    checkpoint carries over (recent_losses: the last 20, whose mean is results.json's final_loss)."""

    iteration: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    images_seen: int = 0
    train_time_s: float = 0.0
    recent_losses: deque = field(default_factory=lambda: deque(maxlen=20))
    no_box: int = 0  # sampled images without a box, this process, this session (a log line, not resumed)
    # the code of each session that trained this run (records.code_history): results.json's code_history
    code_history: list = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, state: dict, batch_size: int) -> "RunState":
        return cls(state["iteration"], state["epoch"], state["batch_in_epoch"],
                   int(state.get("images_seen", state["iteration"] * batch_size)),
                   float(state.get("train_time_s", 0.0)), deque(state.get("recent_losses", []), maxlen=20),
                   code_history=list(state.get("code_history", [])))


@dataclass
class StepOutcome:
    """One optimiser step as the hooks see it; `loss` is the mean over processes (the same on every rank)."""

    outputs: dict
    loss: float
    lr: float
    has_boxes: torch.Tensor
    seconds: float = 0.0


def seed_all(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class PretrainTrainer:
    def __init__(self, cfg: CfgNode, ctx: du.DistContext, logger):
        self.cfg, self.ctx, self.logger = cfg, ctx, logger
        p = cfg.PRETRAIN
        if p.METHOD not in METHODS:
            raise ConfigError(f"PRETRAIN.METHOD: unknown method {p.METHOD!r}; choose one of {sorted(METHODS)}")
        if p.BATCH_SIZE % ctx.world_size:
            raise ConfigError(f"PRETRAIN.BATCH_SIZE: {p.BATCH_SIZE} does not split over {ctx.world_size} processes")
        self.batch_per_process = p.BATCH_SIZE // ctx.world_size
        copy_paste = cfg.VIEWS.COPY_PASTE
        self.box_source = BoxSource(cfg.DATA.PROPOSALS, cfg.DATA.PROPOSALS_TOPK, with_masks=copy_paste.ENABLED,
                                    soft_alpha=copy_paste.MODE == "dilo")  # DiLo's alpha: the saliency map
        self.provenance = pretrain_provenance(cfg, self.box_source.name)
        self.output_dir = cfg.OUTPUT_DIR or default_run_dir(cfg, self.box_source.name)
        self.checkpointer = Checkpointer(os.path.join(self.output_dir, "checkpoints"), cfg.CHECKPOINT.KEEP_LAST, logger)
        self.device_augment = None  # build_data sets it for VIEWS.AUGMENT_ON "device"
        self.hooks: List[HookBase] = []
        self.state = RunState()
        self.step: Optional[StepOutcome] = None
        self.error: Optional[BaseException] = None  # what ended the loop, for the after_train hooks
        self.results: Optional[dict] = None  # set by ResultsWriter (rank 0)
        self.final_weights: Optional[str] = None  # set by CheckpointHook
        self.wall_start = self.t_session = time.perf_counter()

    # ----------------------------------------------------------------- setup
    def build_data(self):
        from objcrop.datasets import load_dataset
        from objcrop.pretrain.views import build_view_policy

        records, _ = load_dataset(self.cfg.DATA.DATASET, strict=self.cfg.DATA.STRICT)
        check_enough_data(len(records), self.cfg.PRETRAIN.BATCH_SIZE, self.ctx.world_size, self.cfg.DATA.DATASET)
        coverage = self.box_source.coverage(records)
        if self.cfg.DATA.PROPOSALS and coverage == 0:
            raise DatasetError(f"{self.cfg.DATA.PROPOSALS}: the proposal store has no entry for any image of "
                               f"{self.cfg.DATA.DATASET} (was it computed for another dataset?)")
        self.logger.info(f"data: {self.cfg.DATA.DATASET}: {len(records)} images; boxes: {self.box_source.name} "
                         f"(covering {coverage:.0%} of images); view policy: {self.provenance.policy_label}")
        items = self.sampled_items(records)
        policy = build_view_policy(self.cfg, background_fn=DatasetBackgrounds(records, self.cfg.DATA.IMAGE_SIZE))
        if self.cfg.VIEWS.AUGMENT_ON == "device":
            from objcrop.pretrain.views import defer_augment

            self.device_augment = defer_augment(policy)
            self.logger.info(f"views: the loader's workers cut the crops; colour, grey, blur, solarize and flip run "
                             f"batched on {self.ctx.device} (VIEWS.AUGMENT_ON device)")
        dataset = ViewPairDataset(records, policy, self.box_source, self.cfg.DATA.IMAGE_SIZE, items,
                                  image_cache_mb=self.cfg.DATA.IMAGE_CACHE_MB)
        sampler = ShardedResumableSampler(len(dataset), self.batch_per_process, self.ctx.rank, self.ctx.world_size,
                                          self.cfg.PRETRAIN.SEED)
        loader = build_loader(dataset, sampler, self.cfg.DATA.NUM_WORKERS, self.ctx.device.type == "cuda")
        return records, sampler, loader

    def sampled_items(self, records):
        """The (record, box) items of a run that samples boxes (data.item_mode), else None (one item per image)."""
        if item_mode(self.cfg) != "boxes":
            return None
        items = box_items(records, self.box_source)
        without = len(records) - len(set(items[:, 0].tolist()))
        self.logger.info(f"data: one item per box (VIEWS.GEOMETRY released, as openimages_dataset_bing.py): an epoch "
                         f"is {len(items)} boxes (PROPOSALS_TOPK {self.cfg.DATA.PROPOSALS_TOPK or 'all'}); "
                         f"{without} images without a box are not sampled, as in the released code")
        check_enough_data(len(items), self.cfg.PRETRAIN.BATCH_SIZE, self.ctx.world_size, self.cfg.DATA.DATASET, "boxes")
        return items

    def build_method(self) -> torch.nn.Module:
        p = self.cfg.PRETRAIN
        seed_all(p.SEED)  # identical initial weights on every process (DDP also broadcasts rank 0's)
        method = METHODS[p.METHOD].from_config(self.cfg, self.ctx.world_size, self.batch_per_process)
        method.log_setup(self.logger, self.ctx.world_size)
        if self.ctx.world_size > 1 and method.SYNC_BN:
            if self.ctx.device.type == "cuda":
                method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
                self.logger.info("SyncBN across processes")
            else:  # torch's SyncBatchNorm has no CPU kernel
                self.logger.warning("SyncBN needs CUDA; on CPU each process keeps its own BN statistics")
        method.to(self.ctx.device)
        if self.channels_last:
            method.to(memory_format=torch.channels_last)
        elif p.CHANNELS_LAST:
            self.logger.info("PRETRAIN.CHANNELS_LAST applies on CUDA and under bf16 autocast on the CPU "
                             "(PRETRAIN.AMP_CPU): this float32 CPU step keeps the contiguous format (channels_last "
                             "measured no faster there, and split BN would copy every activation to group it: "
                             "benchmarks/bench_step.py --layouts)")
        return method

    @property
    def channels_last(self) -> bool:
        """Whether the model and its inputs use channels_last: asked for (PRETRAIN.CHANNELS_LAST), on CUDA or
        under bf16 autocast on the CPU (there oneDNN's bf16 convolutions gain more than split BN's copies cost)."""
        return uses_channels_last(self.cfg, self.ctx.device)

    def build_hooks(self) -> List[HookBase]:
        """The guard first (nothing counts or logs a non-finite loss), then the counters; the writers on
        rank 0, model_final.pth (CheckpointHook) before results.json (ResultsWriter)."""
        hooks = [DivergenceGuard(), StepCounters()]
        if self.ctx.is_main:
            hooks += [MetricsWriter(), ProgressBar(), CheckpointHook(), ResultsWriter()]
        return hooks

    def register_hooks(self, hooks: List[Optional[HookBase]]) -> None:
        """Append hooks (None entries are skipped); they run in this order."""
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self.hooks.append(hook)

    def setup(self, resume: bool) -> None:
        """Data, method, optimiser, schedule and the starting point (a checkpoint's, or iteration 0)."""
        cfg, ctx, p = self.cfg, self.ctx, self.cfg.PRETRAIN
        _, self.sampler, self.loader = self.build_data()
        self.method = self.build_method()
        self.optimizer, self.scaler, self.autocast = build_optimisation(self.method, cfg, ctx.device)
        self.per_epoch = iterations_per_epoch(self.sampler.num_items, p.BATCH_SIZE, ctx.world_size)
        self.max_iter, self.peak_lr = self.per_epoch * p.EPOCHS, scaled_lr(cfg)
        self.warmup = int(round(p.WARMUP_EPOCHS * self.per_epoch))
        self.logger.info(f"effective batch {p.BATCH_SIZE} = {ctx.world_size} process(es) x {self.batch_per_process}; "
                         f"lr {self.peak_lr:g} = {p.BASE_LR:g} x {p.BATCH_SIZE}/{p.BASE_BATCH_SIZE} (linear scaling "
                         f"rule); cosine schedule over {self.max_iter} iterations ({p.EPOCHS} epochs x {self.per_epoch})"
                         + (f", {self.warmup} warm-up" if self.warmup else "")
                         + f"; optimiser {_optimiser_name(p)}, weight decay {p.WEIGHT_DECAY:g}; "
                         + _precision(cfg, ctx.device, self.channels_last))
        if resume:
            self.resume()
        self.state.code_history = code_history(self.state.code_history, code_identity())
        self.logger.info("code: " + "; then ".join(_code_label(c) for c in self.state.code_history)
                         + (" (this run was trained by each in turn)" if len(self.state.code_history) > 1 else ""))
        self.model = self.method
        if ctx.world_size > 1:
            self.model = DistributedDataParallel(self.method, broadcast_buffers=False,  # the queue is the same everywhere
                                                 device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
        self.method.train()

    def resume(self) -> None:
        state, path = self.checkpointer.load_newest_valid()
        if state is None:
            self.logger.info(f"--resume: no valid checkpoint in {self.checkpointer.directory}; starting at iter=0")
            return
        restore_training_state(self, state, path)
        if self.ctx.is_main:  # the process that writes checkpoints (CheckpointHook) is the one that tidies them
            self.checkpointer.tidy_after_resume(path)
        self.state = RunState.from_checkpoint(state, self.cfg.PRETRAIN.BATCH_SIZE)
        s = self.state
        self.logger.info(f"resumed from {path}: iter={s.iteration} (epoch {s.epoch + 1}, batch {s.batch_in_epoch})")

    # ----------------------------------------------------------------- the loop
    def train(self, resume: bool = False) -> Optional[dict]:
        """Run to the last epoch; returns results.json's record on rank 0 (None on the others)."""
        self.wall_start = time.perf_counter()
        done = completed_results(self.output_dir, self.cfg) if resume else None
        if done is not None:
            self.logger.info(f"{self.output_dir}: already complete with this config ({done['iterations']} iterations); "
                             f"nothing to do")
            return done
        self.setup(resume)
        self.register_hooks(self.build_hooks())
        try:
            self._call_hooks("before_train")
            self.t_session = time.perf_counter()
            while self.state.epoch < self.cfg.PRETRAIN.EPOCHS:
                self.run_epoch()
                self._call_hooks("after_epoch")
            self.state.train_time_s += self.session_seconds()
        except BaseException as e:
            self.error = e
            raise
        finally:
            self._call_hooks("after_train")
        du.barrier()
        return self.results

    def run_epoch(self) -> None:
        s = self.state
        self.sampler.set_epoch(s.epoch, s.batch_in_epoch)  # a resumed epoch skips the batches already trained
        t_last = time.perf_counter()
        for view1, view2, has_boxes in self.loader:
            self._call_hooks("before_step")
            self.step = self.run_step(view1, view2, has_boxes)
            now = time.perf_counter()
            self.step.seconds, t_last = now - t_last, now
            self._call_hooks("after_step")
        s.epoch, s.batch_in_epoch = s.epoch + 1, 0

    def run_step(self, view1, view2, has_boxes) -> StepOutcome:
        """One optimiser step on a batch of view pairs, then the method's own after-step update."""
        s = self.state
        lr = lr_at(s.iteration, self.max_iter, self.peak_lr, self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        view1 = self._on_device(view1).contiguous(memory_format=fmt)
        view2 = self._on_device(view2).contiguous(memory_format=fmt)
        with self.autocast():
            out = self.model(view1, view2)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(out["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            out["loss"].backward()
            self.optimizer.step()
        s.iteration, s.batch_in_epoch = s.iteration + 1, s.batch_in_epoch + 1
        self.method.after_step(s.iteration / self.max_iter)
        loss = float(du.mean_over_processes(out["loss"]))  # all ranks see the same value
        return StepOutcome(out, loss, lr, has_boxes)

    def _on_device(self, views) -> torch.Tensor:
        """A batch of views on the training device; (uint8 crops, parameters) are augmented there."""
        if self.device_augment is None:
            return views.to(self.ctx.device, non_blocking=True)
        crops, params = (t.to(self.ctx.device, non_blocking=True) for t in views)
        return self.device_augment.apply_batch(crops, params)

    def session_seconds(self) -> float:
        """Training time of this session so far (results.json's train_time_s adds every session's)."""
        return time.perf_counter() - self.t_session

    def _call_hooks(self, stage: str) -> None:
        for hook in self.hooks:
            getattr(hook, stage)()


def _code_label(code: dict) -> str:
    commit = code.get("commit")
    if not commit:
        return f"objcrop {code.get('objcrop')} (no git checkout)"
    changes = " with uncommitted changes" if code.get("dirty") else ""
    return f"objcrop {code.get('objcrop')} (commit {commit[:12]}{changes})"


def _precision(cfg: CfgNode, device: torch.device, channels_last: bool) -> str:
    """The step's arithmetic as the log states it: autocast or float32, and the memory format."""
    amp = uses_autocast(cfg, device)
    where = " on the CPU (PRETRAIN.AMP_CPU)" if amp and device.type == "cpu" else ""
    precision = f"{cfg.PRETRAIN.AMP_DTYPE} autocast{where}" if amp else "float32"
    return f"{precision}, {'channels_last' if channels_last else 'contiguous'} memory format"


def _optimiser_name(p) -> str:
    """The optimiser as the log names it (LARS with its trust coefficient: BYOL's recipe)."""
    name = str(p.get("OPTIMIZER", "sgd"))
    return f"LARS (trust coefficient {p.LARS_TRUST_COEFFICIENT:g})" if name == "lars" else f"SGD momentum {p.MOMENTUM:g}"
