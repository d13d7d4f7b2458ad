"""The pretraining loop: one SSL method, one view policy, DDP or a single process, resumable.

`PretrainTrainer(cfg, ctx, logger).train(resume)` builds the data, method and optimiser, restores
the newest valid checkpoint when asked, runs the epochs and writes checkpoints, metrics.jsonl,
TensorBoard events, model_final.pth and results.json (rank 0 only writes files).
"""
import contextlib
import math
import os
import re
import time
from collections import deque

import torch
from torch.nn.parallel import DistributedDataParallel

from objcrop.config import CfgNode, config_hash
from objcrop.errors import ConfigError, DatasetError, ObjcropError
from objcrop.io import append_jsonl, atomic_path, read_json, write_json_atomic, write_text_atomic
from objcrop.pretrain import distributed as du
from objcrop.pretrain.engine.checkpoint import Checkpointer, rng_state, set_rng_state
from objcrop.pretrain.engine.data import (BoxSource, DatasetBackgrounds, ShardedResumableSampler, ViewPairDataset, build_loader,
                                          check_enough_data, iterations_per_epoch)
from objcrop.pretrain.methods import METHODS


class TrainingDiverged(ObjcropError):
    """The loss became NaN or infinite."""


def policy_name(cfg: CfgNode) -> str:
    """The view policy as runs and reports name it; copy-paste on top and a PRETRAIN.TAG are part
    of the name (`obj-obj-dilate+copy-paste`, `random-no-colour`), so those runs get their own
    report row."""
    if "VIEWS" not in cfg or "POLICY" not in cfg.VIEWS:
        return "random"
    name = str(cfg.VIEWS.POLICY)
    if "COPY_PASTE" in cfg.VIEWS and cfg.VIEWS.COPY_PASTE.ENABLED:
        name += "+copy-paste"
    tag = str(cfg.PRETRAIN.get("TAG", "")) if "PRETRAIN" in cfg else ""
    return f"{name}-{tag}" if tag else name


def dataset_tag(spec: str) -> str:
    """A file-name-safe tag of a dataset name or spec: 'synth:/data/synth_small:train' -> 'synth_small-train'."""
    parts = [os.path.basename(p.rstrip("/")) or p for p in spec.split(":")]
    if len(parts) > 1 and parts[0] in ("coco", "voc", "openimages", "folder", "synth"):
        parts = parts[1:]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(p for p in parts if p)) or "data"


def default_run_dir(cfg: CfgNode, proposals: str) -> str:
    p = cfg.PRETRAIN
    name = (f"{p.METHOD}_{policy_name(cfg)}_{proposals}_{p.ARCH.replace('resnet', 'r')}_b{p.BATCH_SIZE}"
            f"_e{p.EPOCHS}_{dataset_tag(cfg.DATA.DATASET)}_s{p.SEED}")
    return os.path.join("output", "pretrain", name)


def scaled_lr(cfg: CfgNode) -> float:
    """The linear scaling rule: BASE_LR for BASE_BATCH_SIZE, proportional to the effective batch."""
    return cfg.PRETRAIN.BASE_LR * cfg.PRETRAIN.BATCH_SIZE / cfg.PRETRAIN.BASE_BATCH_SIZE


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a half-cosine from `peak` to 0 at `total` (step is 0-based)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def model_and_backbone(method: torch.nn.Module) -> dict:
    """The method's state dict and the backbone's (torchvision names, no `fc.*`) on the CPU.

    The backbone entries are the very tensors of the model entries, so torch.save stores them once.
    """
    model = {k: v.detach().cpu() for k, v in method.state_dict().items()}
    prefix = method.BACKBONE_PREFIX
    backbone = {k[len(prefix):]: v for k, v in model.items() if k.startswith(prefix) and not k.startswith(prefix + "fc.")}
    return {"model": model, "backbone": backbone}


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
        self.box_source = BoxSource(cfg.DATA.PROPOSALS, cfg.DATA.PROPOSALS_TOPK, with_masks=cfg.VIEWS.COPY_PASTE.ENABLED)
        self.output_dir = cfg.OUTPUT_DIR or default_run_dir(cfg, self.box_source.name)
        self.checkpointer = Checkpointer(os.path.join(self.output_dir, "checkpoints"), cfg.CHECKPOINT.KEEP_LAST, logger)
        self.device_augment = None  # build_data sets it for VIEWS.AUGMENT_ON "device"

    # ----------------------------------------------------------------- setup
    def pretrain_block(self) -> dict:
        p = self.cfg.PRETRAIN
        return {"method": p.METHOD, "policy": policy_name(self.cfg), "proposals": self.box_source.name,
                "epochs": int(p.EPOCHS), "arch": p.ARCH, "dataset": self.cfg.DATA.DATASET, "seed": int(p.SEED)}

    def build_data(self):
        from objcrop.datasets import load_dataset
        from objcrop.pretrain.views import build_view_policy

        records, _ = load_dataset(self.cfg.DATA.DATASET)
        check_enough_data(len(records), self.cfg.PRETRAIN.BATCH_SIZE, self.ctx.world_size, self.cfg.DATA.DATASET)
        coverage = self.box_source.coverage(records)
        if self.cfg.DATA.PROPOSALS and coverage == 0:
            raise DatasetError(f"{self.cfg.DATA.PROPOSALS}: the proposal store has no entry for any image of "
                               f"{self.cfg.DATA.DATASET} (was it computed for another dataset?)")
        self.logger.info(f"data: {self.cfg.DATA.DATASET}: {len(records)} images; boxes: {self.box_source.name} "
                         f"(covering {coverage:.0%} of images); view policy: {policy_name(self.cfg)}")
        policy = build_view_policy(self.cfg, background_fn=DatasetBackgrounds(records, self.cfg.DATA.IMAGE_SIZE))
        if self.cfg.VIEWS.AUGMENT_ON == "device":
            from objcrop.pretrain.views import defer_augment

            self.device_augment = defer_augment(policy)
            self.logger.info(f"views: the loader's workers cut the crops; colour, grey, blur, solarize and flip run "
                             f"batched on {self.ctx.device} (VIEWS.AUGMENT_ON device)")
        dataset = ViewPairDataset(records, policy, self.box_source, self.cfg.DATA.IMAGE_SIZE)
        sampler = ShardedResumableSampler(len(records), self.batch_per_process, self.ctx.rank, self.ctx.world_size,
                                          self.cfg.PRETRAIN.SEED)
        loader = build_loader(dataset, sampler, self.cfg.DATA.NUM_WORKERS, self.ctx.device.type == "cuda")
        return records, sampler, loader

    def build_method(self) -> torch.nn.Module:
        p = self.cfg.PRETRAIN
        seed_all(p.SEED)  # identical initial weights on every process (DDP also broadcasts rank 0's)
        method = METHODS[p.METHOD].from_config(self.cfg, self.ctx.world_size, self.batch_per_process)
        if p.METHOD == "moco_v2":
            self.logger.info(f"MoCo-v2: K={method.K} m={method.m} T={method.T}; shuffle-BN with {method.bn_splits} "
                             f"BN group(s) per process x {self.ctx.world_size} process(es)")
            if method.bn_splits == 1 and self.ctx.world_size == 1:
                self.logger.warning("MoCo-v2 in one process with PRETRAIN.MOCO.BN_SPLITS 1: queries and keys share "
                                    "BN statistics (no shuffle-BN); use BN_SPLITS >= 2")
        if self.ctx.world_size > 1 and p.METHOD != "moco_v2":
            if self.ctx.device.type == "cuda":
                method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
                self.logger.info("SyncBN across processes")
            else:  # torch's SyncBatchNorm has no CPU kernel
                self.logger.warning("SyncBN needs CUDA; on CPU each process keeps its own BN statistics")
        method.to(self.ctx.device)
        if p.CHANNELS_LAST:
            method.to(memory_format=torch.channels_last)
        return method

    # ----------------------------------------------------------------- checkpoint state
    def _state(self, method, optimizer, scaler, iteration, epoch, batch_in_epoch, extra) -> dict:
        return {"objcrop_checkpoint": 1, "arch": self.cfg.PRETRAIN.ARCH, "method": self.cfg.PRETRAIN.METHOD,
                **model_and_backbone(method), "pretrain": self.pretrain_block(), "config": self.cfg.dump(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else {},
                "iteration": iteration, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "world_size": self.ctx.world_size, "rng": rng_state(), **extra}

    def _restore(self, state, path, method, optimizer, scaler):
        if state["arch"] != self.cfg.PRETRAIN.ARCH or state["method"] != self.cfg.PRETRAIN.METHOD:
            raise ConfigError(f"{path}: checkpoint of {state['method']}/{state['arch']}, but the config asks for "
                              f"{self.cfg.PRETRAIN.METHOD}/{self.cfg.PRETRAIN.ARCH}")
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        if state.get("config") and state["config"] != self.cfg.dump():
            self.logger.warning(f"{path}: was written with a different config; continuing with the current one")
        if state.get("world_size", self.ctx.world_size) != self.ctx.world_size:
            self.logger.info(f"resuming a {state['world_size']}-process run on {self.ctx.world_size} processes "
                             f"(same global batches)")

    def _truncate_metrics(self, iteration: int) -> None:
        """Drop metrics lines logged after the checkpoint: those steps are trained again."""
        path = os.path.join(self.output_dir, "metrics.jsonl")
        if not os.path.exists(path):
            return
        import json

        with open(path, "r", encoding="utf-8") as f:
            lines = [ln for ln in f if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("iteration", 0) <= iteration]
        write_text_atomic(path, "".join(kept))
        if len(kept) < len(lines):
            self.logger.info(f"metrics.jsonl: dropped {len(lines) - len(kept)} lines logged after iter={iteration}")

    # ----------------------------------------------------------------- the loop
    def train(self, resume: bool = False) -> dict:
        cfg, ctx, p = self.cfg, self.ctx, self.cfg.PRETRAIN
        wall_start = time.perf_counter()
        done = self._complete_results() if resume else None
        if done is not None:
            self.logger.info(f"{self.output_dir}: already complete with this config ({done['iterations']} iterations); "
                             f"nothing to do")
            return done
        _, sampler, loader = self.build_data()
        method = self.build_method()
        optimizer, scaler, autocast = self._build_optimisation(method)
        per_epoch = iterations_per_epoch(sampler.num_items, p.BATCH_SIZE, ctx.world_size)
        total, warmup, peak_lr = per_epoch * p.EPOCHS, int(round(p.WARMUP_EPOCHS * per_epoch)), scaled_lr(cfg)
        self.logger.info(f"effective batch {p.BATCH_SIZE} = {ctx.world_size} process(es) x {self.batch_per_process}; "
                         f"lr {peak_lr:g} = {p.BASE_LR:g} x {p.BATCH_SIZE}/{p.BASE_BATCH_SIZE} (linear scaling rule); "
                         f"cosine schedule over {total} iterations ({p.EPOCHS} epochs x {per_epoch})"
                         + (f", {warmup} warm-up" if warmup else ""))
        iteration, start_epoch, start_batch, extra = self._resume_or_start(resume, method, optimizer, scaler)
        model = method
        if ctx.world_size > 1:
            model = DistributedDataParallel(method, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
                                            broadcast_buffers=False)  # the queue is identical on every rank anyway
        method.train()

        writer = self._tensorboard() if ctx.is_main else None
        progress = self._progress_bar(total, iteration)
        recent, metrics_path = extra["recent_losses"], os.path.join(self.output_dir, "metrics.jsonl")
        no_box, t_session = 0, time.perf_counter()
        try:
            for epoch in range(start_epoch, p.EPOCHS):
                first = start_batch if epoch == start_epoch else 0
                sampler.set_epoch(epoch, first)
                t_last = time.perf_counter()
                for batch_in_epoch, (view1, view2, has_boxes) in enumerate(loader, start=first):
                    lr = lr_at(iteration, total, peak_lr, warmup)
                    out = self._step(model, optimizer, scaler, autocast, view1, view2, lr)
                    iteration += 1
                    method.after_step(iteration / total)
                    loss_value = float(du.mean_over_processes(out["loss"]))  # all ranks see the same value
                    if not math.isfinite(loss_value):
                        raise TrainingDiverged(self._diverged_message(loss_value, iteration, lr))
                    recent.append(loss_value)
                    extra["images_seen"] += p.BATCH_SIZE
                    no_box += int((~has_boxes).sum())
                    now = time.perf_counter()
                    step_time, t_last = now - t_last, now
                    if ctx.is_main:
                        self._log_step(out, loss_value, lr, iteration, epoch, total, step_time, metrics_path, writer, progress)
                    inside_epoch = batch_in_epoch + 1 < per_epoch
                    if ctx.is_main and cfg.CHECKPOINT.PERIOD and iteration % cfg.CHECKPOINT.PERIOD == 0 and inside_epoch:
                        self._save(method, optimizer, scaler, iteration, epoch, batch_in_epoch + 1, extra, t_session)
                if ctx.is_main and ((epoch + 1) % max(1, cfg.CHECKPOINT.EPOCH_PERIOD) == 0 or epoch + 1 == p.EPOCHS):
                    self._save(method, optimizer, scaler, iteration, epoch + 1, 0, extra, t_session)
                self.logger.info(f"epoch {epoch + 1}/{p.EPOCHS} done: iter={iteration}, loss {recent[-1]:.4f}")
        except TrainingDiverged as e:
            if ctx.is_main:
                self._write_results("failed", extra, recent, iteration, wall_start, error=str(e))
            raise
        finally:
            if progress is not None:
                progress.close()
            if writer is not None:
                writer.close()

        extra["train_time_s"] += time.perf_counter() - t_session
        # over the whole run, every session of it: a session resumed from the final checkpoint (a
        # finished run whose config gained a key since) trains nothing and must not report 0 img/s
        throughput = extra["images_seen"] / max(1e-9, extra["train_time_s"])
        if no_box and cfg.VIEWS.POLICY != "random":
            self.logger.info(f"{no_box} sampled images (this process) had no boxes: the policy fell back to random crops")
        results = self._finish(method, iteration, extra, recent, wall_start, throughput) if ctx.is_main else None
        du.barrier()
        return results

    def _build_optimisation(self, method):
        """SGD over the trained parameters, the loss scaler (float16 only) and the autocast context."""
        p, device = self.cfg.PRETRAIN, self.ctx.device
        params = [q for q in method.parameters() if q.requires_grad]
        optimizer = torch.optim.SGD(params, lr=scaled_lr(self.cfg), momentum=p.MOMENTUM, weight_decay=p.WEIGHT_DECAY)
        use_amp = p.AMP and device.type == "cuda"
        amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(p.AMP_DTYPE)
        if use_amp and amp_dtype is None:
            raise ConfigError(f"PRETRAIN.AMP_DTYPE: {p.AMP_DTYPE!r} is not 'bfloat16' or 'float16'")
        scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype == torch.float16 else None
        autocast = (lambda: torch.autocast(device_type="cuda", dtype=amp_dtype)) if use_amp else contextlib.nullcontext
        return optimizer, scaler, autocast

    def _resume_or_start(self, resume, method, optimizer, scaler):
        """(iteration, epoch, batch in epoch, counters) to start from; a fresh start clears old run files."""
        # recent_losses: the last 20 losses, whose mean is results.json's final_loss (kept across resumes)
        iteration, epoch, batch = 0, 0, 0
        extra = {"images_seen": 0, "train_time_s": 0.0, "recent_losses": deque(maxlen=20)}
        if resume:
            state, path = self.checkpointer.load_newest_valid()
            if state is None:
                self.logger.info(f"--resume: no valid checkpoint in {self.checkpointer.directory}; starting at iter=0")
            else:
                self._restore(state, path, method, optimizer, scaler)
                iteration, epoch, batch = state["iteration"], state["epoch"], state["batch_in_epoch"]
                extra = {"images_seen": int(state.get("images_seen", iteration * self.cfg.PRETRAIN.BATCH_SIZE)),
                         "train_time_s": float(state.get("train_time_s", 0.0)),
                         "recent_losses": deque(state.get("recent_losses", []), maxlen=20)}
                self.logger.info(f"resumed from {path}: iter={iteration} (epoch {epoch + 1}, batch {batch})")
        if self.ctx.is_main:
            if iteration == 0:
                removed = self.checkpointer.remove_all()
                if removed:
                    self.logger.warning(f"starting afresh: removed {removed} checkpoint(s) of an earlier run in {self.output_dir}")
                for name in ("metrics.jsonl", "results.json"):
                    if os.path.exists(os.path.join(self.output_dir, name)):
                        os.remove(os.path.join(self.output_dir, name))
            else:
                self._truncate_metrics(iteration)
        return iteration, epoch, batch, extra

    def _step(self, model, optimizer, scaler, autocast, view1, view2, lr) -> dict:
        """One optimiser step on a batch of view pairs; returns the method's outputs (loss, metrics)."""
        for group in optimizer.param_groups:
            group["lr"] = lr
        fmt = torch.channels_last if self.cfg.PRETRAIN.CHANNELS_LAST else torch.contiguous_format
        view1 = self._on_device(view1).contiguous(memory_format=fmt)
        view2 = self._on_device(view2).contiguous(memory_format=fmt)
        with autocast():
            out = model(view1, view2)
        optimizer.zero_grad(set_to_none=True)
        if scaler:
            scaler.scale(out["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            out["loss"].backward()
            optimizer.step()
        return out

    def _on_device(self, views) -> torch.Tensor:
        """A batch of views on the training device; (uint8 crops, parameters) are augmented there."""
        if self.device_augment is None:
            return views.to(self.ctx.device, non_blocking=True)
        crops, params = (t.to(self.ctx.device, non_blocking=True) for t in views)
        return self.device_augment.apply_batch(crops, params)

    def _finish(self, method, iteration, extra, recent, wall_start, throughput) -> dict:
        """model_final.pth (no optimiser state) and results.json; rank 0 only."""
        p = self.cfg.PRETRAIN
        final = {"objcrop_checkpoint": 1, "arch": p.ARCH, "method": p.METHOD, **model_and_backbone(method),
                 "pretrain": self.pretrain_block(), "config": self.cfg.dump(), "iteration": iteration}
        path = os.path.join(self.output_dir, "model_final.pth")
        with atomic_path(path) as tmp:
            torch.save(final, tmp)
        results = self._write_results("ok", extra, recent, iteration, wall_start, throughput=throughput)
        self.logger.info(f"done: iter={iteration}, {extra['images_seen']} images seen, {throughput:.1f} img/s; weights in {path}")
        return results

    # ----------------------------------------------------------------- helpers
    def _save(self, method, optimizer, scaler, iteration, epoch, batch_in_epoch, extra, t_session):
        extra = dict(extra, train_time_s=extra["train_time_s"] + time.perf_counter() - t_session,
                     recent_losses=[float(v) for v in extra["recent_losses"]])  # a list: weights_only-loadable
        path = self.checkpointer.save(self._state(method, optimizer, scaler, iteration, epoch, batch_in_epoch, extra),
                                      iteration)
        self.logger.debug(f"checkpoint {path}")

    def _complete_results(self):
        """results.json of this run directory if it says this very config finished, model_final.pth beside it."""
        path = os.path.join(self.output_dir, "results.json")
        if not os.path.exists(path) or not os.path.exists(os.path.join(self.output_dir, "model_final.pth")):
            return None
        try:
            results = read_json(path)
        except ObjcropError:
            return None
        same_config = results.get("config_hash") == config_hash(self.cfg)
        return results if results.get("status") == "ok" and same_config else None

    def _diverged_message(self, loss_value, iteration, lr) -> str:
        newest = self.checkpointer.list()
        keep = f"the last good checkpoint is {newest[0][1]}" if newest else "no checkpoint was written yet"
        return (f"{self.output_dir}: loss became {loss_value} at iter={iteration} (lr {lr:.4g}); stopped; {keep}. "
                f"Lower PRETRAIN.BASE_LR or check the data.")

    def _log_step(self, out, loss_value, lr, iteration, epoch, total, step_time, metrics_path, writer, progress):
        imgs_per_s = self.cfg.PRETRAIN.BATCH_SIZE / max(step_time, 1e-9)
        if iteration % self.cfg.LOG.PERIOD == 0 or iteration == total:
            row = {"iteration": iteration, "epoch": epoch, "loss": loss_value, "lr": lr, "images_per_s": imgs_per_s}
            row.update({k: float(v) for k, v in out.items() if k != "loss"})
            append_jsonl(metrics_path, row)
            if writer is not None:
                for k, v in row.items():
                    if k not in ("iteration", "epoch"):
                        writer.add_scalar(f"pretrain/{k}", v, iteration)
        if iteration % self.cfg.LOG.PRINT_PERIOD == 0 or iteration == total:
            self.logger.info(f"iter={iteration}/{total} epoch={epoch + 1} loss={loss_value:.4f} lr={lr:.5f} "
                             f"img/s={imgs_per_s:.1f}")
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.4f}", refresh=False)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # e.g. a GPU machine without the tensorboard package
            self.logger.warning("tensorboard is not installed: no TensorBoard events (metrics.jsonl is written)")
            return None
        return SummaryWriter(log_dir=self.output_dir)

    def _progress_bar(self, total: int, initial: int):
        if not self.ctx.is_main:
            return None
        try:
            from tqdm import tqdm
        except ImportError:  # a bare GPU machine: the `iter=` log lines still show progress
            return None
        return tqdm(total=total, initial=initial, desc="pretrain", unit="it", dynamic_ncols=True, mininterval=1.0)

    def _write_results(self, status, extra, recent, iteration, wall_start, throughput=None, error=None) -> dict:
        results = {"stage": "pretrain", "status": status, "pretrain": self.pretrain_block(),
                   "seed": int(self.cfg.PRETRAIN.SEED), "config_hash": config_hash(self.cfg),
                   "wall_time_s": round(time.perf_counter() - wall_start, 3),
                   "images_seen": int(extra["images_seen"]), "iterations": int(iteration),
                   "throughput": None if throughput is None else round(throughput, 3),
                   "final_loss": (sum(recent) / len(recent)) if recent else None,
                   "batch_size": int(self.cfg.PRETRAIN.BATCH_SIZE), "world_size": self.ctx.world_size,
                   "train_time_s": round(extra["train_time_s"], 3)}
        if error:
            results["error"] = error
        write_json_atomic(os.path.join(self.output_dir, "results.json"), results)
        return results

