"""The pretraining loop's hooks, in detectron2's `HookBase` shape (detectron2/engine/train_loop.py).

`PretrainTrainer.train()` is a short loop; everything a run does besides the optimiser step arrives
as a hook: the divergence guard, the step counters, metrics.jsonl / TensorBoard / log lines, the
progress bar (here), checkpoints (engine/checkpoint.py) and results.json (engine/results.py).

A hook sees its trainer as `self.trainer` and reads what the loop exposes there:
`cfg`, `ctx`, `logger`, `output_dir`, `method`, `state` (a RunState: iteration, epoch,
batch_in_epoch, counters kept across resumes), `step` (the last StepOutcome: loss, lr, outputs,
seconds, has_boxes), `max_iter` and, in `after_train`, `error` (None when the loop ended normally).
Hooks run in the order they are registered; `DivergenceGuard` comes first, so nothing counts or
logs a non-finite loss.

detectron2's loop has no epochs; this one has `after_epoch`, since the resumable sampler, the
epoch-end checkpoints and the "epoch done" line all follow epochs.
"""
import json
import math
import os

from objcrop.errors import ObjcropError
from objcrop.io import append_jsonl, write_text_atomic


class HookBase:
    """Override any of the five; each is called on every process the hook is registered on."""

    trainer = None  # set by PretrainTrainer.register_hooks

    def before_train(self):
        pass

    def before_step(self):
        pass

    def after_step(self):
        pass

    def after_epoch(self):
        pass

    def after_train(self):
        pass


class TrainingDiverged(ObjcropError):
    """The loss became NaN or infinite."""


class DivergenceGuard(HookBase):
    """Stop the run when the loss (averaged over processes, so every rank stops together) is not finite."""

    def after_step(self):
        t = self.trainer
        if math.isfinite(t.step.loss):
            return
        newest = t.checkpointer.list()
        keep = f"the last good checkpoint is {newest[0][1]}" if newest else "no checkpoint was written yet"
        raise TrainingDiverged(f"{t.output_dir}: loss became {t.step.loss} at iter={t.state.iteration} "
                               f"(lr {t.step.lr:.4g}); stopped; {keep}. Lower PRETRAIN.BASE_LR or check the data.")


class StepCounters(HookBase):
    """The counters a run keeps across resumes: images seen, the last 20 losses (results.json's
    final_loss is their mean) and how many sampled images had no box (this process only)."""

    def after_step(self):
        t = self.trainer
        t.state.recent_losses.append(t.step.loss)
        t.state.images_seen += t.cfg.PRETRAIN.BATCH_SIZE
        t.state.no_box += int((~t.step.has_boxes).sum())

    def after_train(self):
        t = self.trainer
        if t.error is None and t.state.no_box and t.cfg.VIEWS.POLICY != "random":
            t.logger.info(f"{t.state.no_box} sampled images (this process) had no boxes: the policy fell back "
                          f"to random crops")


class MetricsWriter(HookBase):
    """metrics.jsonl and TensorBoard every LOG.PERIOD steps, an `iter=` log line every LOG.PRINT_PERIOD;
    the method's own outputs (acc_top1, embedding_spread, ...) travel with the loss. Rank 0 only."""

    def __init__(self):
        self.writer = None

    @property
    def path(self) -> str:
        return os.path.join(self.trainer.output_dir, "metrics.jsonl")

    def before_train(self):
        t = self.trainer
        if t.state.iteration == 0:  # a fresh start: an earlier run's lines are not this run's
            if os.path.exists(self.path):
                os.remove(self.path)
        else:
            self._truncate(t.state.iteration)
        self.writer = _tensorboard(t.output_dir, t.logger)

    def _truncate(self, iteration: int) -> None:
        """Drop lines logged after the checkpoint: those steps are trained again."""
        if not os.path.exists(self.path):
            return
        with open(self.path, "r", encoding="utf-8") as f:
            lines = [ln for ln in f if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("iteration", 0) <= iteration]
        write_text_atomic(self.path, "".join(kept))
        if len(kept) < len(lines):
            self.trainer.logger.info(f"metrics.jsonl: dropped {len(lines) - len(kept)} lines logged after "
                                     f"iter={iteration}")

    def after_step(self):
        t, step, iteration = self.trainer, self.trainer.step, self.trainer.state.iteration
        imgs_per_s = t.cfg.PRETRAIN.BATCH_SIZE / max(step.seconds, 1e-9)
        last = iteration == t.max_iter
        if iteration % t.cfg.LOG.PERIOD == 0 or last:
            row = {"iteration": iteration, "epoch": t.state.epoch, "loss": step.loss, "lr": step.lr,
                   "images_per_s": imgs_per_s}
            row.update({k: float(v) for k, v in step.outputs.items() if k != "loss"})
            append_jsonl(self.path, row)
            if self.writer is not None:
                for k, v in row.items():
                    if k not in ("iteration", "epoch"):
                        self.writer.add_scalar(f"pretrain/{k}", v, iteration)
        if iteration % t.cfg.LOG.PRINT_PERIOD == 0 or last:
            t.logger.info(f"iter={iteration}/{t.max_iter} epoch={t.state.epoch + 1} loss={step.loss:.4f} "
                          f"lr={step.lr:.5f} img/s={imgs_per_s:.1f}")

    def after_epoch(self):
        t = self.trainer
        t.logger.info(f"epoch {t.state.epoch}/{t.cfg.PRETRAIN.EPOCHS} done: iter={t.state.iteration}, "
                      f"loss {t.state.recent_losses[-1]:.4f}")

    def after_train(self):
        if self.writer is not None:
            self.writer.close()


def _tensorboard(log_dir: str, logger):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # e.g. a GPU machine without the tensorboard package
        logger.warning("tensorboard is not installed: no TensorBoard events (metrics.jsonl is written)")
        return None
    return SummaryWriter(log_dir=log_dir)


class ProgressBar(HookBase):
    """A tqdm bar over the run's iterations (rank 0); without tqdm the `iter=` log lines show progress."""

    def __init__(self):
        self.bar = None

    def before_train(self):
        try:
            from tqdm import tqdm
        except ImportError:  # a bare GPU machine
            return
        t = self.trainer
        self.bar = tqdm(total=t.max_iter, initial=t.state.iteration, desc="pretrain", unit="it", dynamic_ncols=True,
                        mininterval=1.0)

    def after_step(self):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.trainer.step.loss:.3f}", lr=f"{self.trainer.step.lr:.4f}", refresh=False)

    def after_train(self):
        if self.bar is not None:
            self.bar.close()
