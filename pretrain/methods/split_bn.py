"""Split BatchNorm: per-group batch statistics in one BatchNorm call (MoCo's single-GPU shuffle-BN).

MoCo's own single-GPU demo (facebookresearch/moco, colab/moco_cifar10_demo.ipynb, `SplitBatchNorm`)
simulates S GPUs by reshaping an N x C x ... batch to N/S x (S*C) x ...: sample n then lands in
channel group n mod S, so one BatchNorm call normalises each group with its own statistics. Forwarding
the whole batch once instead of S chunks keeps the convolutions at full batch size, which is where
the time goes (issue 22: 0.83x the bare ResNet step with chunks).

Two things differ from the demo, both so that the result equals forwarding S contiguous chunks one
after another (the path objcrop had, and the equality its tests pin):
* groups are contiguous chunks, not residues mod S: the caller reorders the batch once
  (`interleave_groups`) and restores the order after the encoder; every other layer is per-sample;
* the running statistics are updated as S sequential BN calls would update them (the demo averages
  the S groups' updates), and num_batches_tracked advances by S.
A batch that S does not divide is forwarded in the same chunks x.chunk(S) would give, one by one.
So is a channels_last batch (`groups_in_chunks`): its reshape to S*C channels cannot be a view, and
costs two copies of every BN input each way (benchmarks/bench_step.py --cpu-amp on measures the
channels_last bf16 step); the convolutions still see the whole batch. In eval mode the layer is plain BatchNorm.
"""
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class _SplitBatchNorm:
    """Mixed into nn.BatchNorm1d / nn.BatchNorm2d: same parameters, buffers and state-dict keys."""

    num_splits: int = 1
    # set by `groups_in_chunks` for one forward: the caller did not reorder the batch, so the groups
    # are its contiguous chunks, and every layer of the encoder must agree on that
    chunked: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, n = self.num_splits, x.shape[0]
        if not self.training or s == 1:
            return super().forward(x)
        if n % s or self.chunked:  # the chunks, in turn (the statistics one pass would compute)
            return torch.cat([super(_SplitBatchNorm, self).forward(c) for c in x.chunk(s)], dim=0)
        return self._one_pass(x, s)

    def _one_pass(self, x: torch.Tensor, s: int) -> torch.Tensor:
        c = x.shape[1]
        channels_last = prefers_chunks(x)  # a layer called on its own; MoCo's encoders chunk these
        grouped = x.reshape(x.shape[0] // s, s * c, *x.shape[2:])  # a view for contiguous input
        tracking = self.running_mean is not None
        # BN with momentum 1.0 leaves each group's batch mean and unbiased var in the buffers it is given
        stats = self._group_stats_buffer(s * c, x.device) if tracking else (None, None)
        weight = self.weight.repeat(s) if self.weight is not None else None
        bias = self.bias.repeat(s) if self.bias is not None else None
        y = _as_batch(F.batch_norm(grouped, stats[0], stats[1], weight, bias, True, 1.0, self.eps), x.shape)
        if tracking:
            self._update_running_stats(stats[0].view(s, c), stats[1].view(s, c))
        return y.contiguous(memory_format=torch.channels_last) if channels_last else y

    def _group_stats_buffer(self, size: int, device: torch.device) -> torch.Tensor:
        """A 2 x size scratch tensor for the groups' mean and var, kept between calls (a fresh pair per
        layer per call was 4 small ops in a CPU profile). BN with momentum 1.0 overwrites it (1 * stat
        + 0 * old), which needs only finite old values: zeros at first, a previous batch's after. Not a
        buffer: it is not state, and neither state_dict nor DDP's buffer broadcast should see it."""
        buf = getattr(self, "_stats_scratch", None)
        if buf is None or buf.shape[1] != size or buf.device != device or buf.dtype != self.running_mean.dtype:
            buf = self._stats_scratch = torch.zeros(2, size, device=device, dtype=self.running_mean.dtype)
        return buf

    @torch.no_grad()
    def _update_running_stats(self, mean_g: torch.Tensor, var_g: torch.Tensor) -> None:
        """What S sequential BN calls on groups 0..S-1 leave in the buffers.

        With a fixed momentum f the S updates r <- (1 - f) r + f m_g fold into one:
        r <- (1 - f)^S r + sum_g f (1 - f)^(S-1-g) m_g, one addmv per buffer instead of 2 S calls (the
        loop's 4 tiny ops per group, per BN layer, per encoder stood out in a CPU profile of a ResNet-50
        step; so did building the weights and the matmul-then-add of the folded form, hence the cache)."""
        s = mean_g.shape[0]
        if self.momentum is None:  # cumulative average: the factor changes with every group
            for g in range(s):
                self.num_batches_tracked.add_(1)
                f = 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1.0 - f).add_(mean_g[g], alpha=f)
                self.running_var.mul_(1.0 - f).add_(var_g[g], alpha=f)
            return
        f = self.momentum
        self.num_batches_tracked.add_(s)
        w = self._fold_weights(s, f, mean_g)
        decay = (1.0 - f) ** s
        self.running_mean.addmv_(mean_g.t(), w, beta=decay)  # decay * r + sum_g w_g m_g, one call
        self.running_var.addmv_(var_g.t(), w, beta=decay)

    def _fold_weights(self, s: int, f: float, like: torch.Tensor) -> torch.Tensor:
        """The weights f (1 - f)^(S-1-g) of the folded update, built once per (S, momentum, dtype, device)."""
        key = (s, f, like.dtype, like.device)
        cached = getattr(self, "_fold_cache", None)
        if cached is None or cached[0] != key:
            w = torch.tensor([f * (1.0 - f) ** (s - 1 - g) for g in range(s)], dtype=like.dtype, device=like.device)
            cached = self._fold_cache = (key, w)
        return cached[1]


def _as_batch(y: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The grouped output back in N x C x ... shape, as a tensor of its own rather than a view: ResNet's
    blocks add the shortcut in place (`out += identity`), and an in-place op on a view makes autograd
    copy the whole activation in backward (CopySlices), ~6 % of a ResNet-50 step on CPU. Nothing else
    holds the grouped tensor, so `_unsafe_view` (reshape's own non-view op) is safe here."""
    if y.is_contiguous():
        return torch.ops.aten._unsafe_view(y, shape)
    return y.reshape(shape)


class SplitBatchNorm1d(_SplitBatchNorm, nn.BatchNorm1d):
    pass


class SplitBatchNorm2d(_SplitBatchNorm, nn.BatchNorm2d):
    pass


_SPLIT_CLASS = {nn.BatchNorm1d: SplitBatchNorm1d, nn.BatchNorm2d: SplitBatchNorm2d}


def convert_to_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """`module` with every BatchNorm1d/2d replaced by its split twin (weights and buffers kept)."""
    for name, child in module.named_children():
        cls = _SPLIT_CLASS.get(type(child))
        if cls is None:
            convert_to_split_bn(child, num_splits)
            continue
        split = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
        split.load_state_dict(child.state_dict())
        split.num_splits = num_splits
        setattr(module, name, split)
    return module


def prefers_chunks(x: torch.Tensor) -> bool:
    """Whether a batch should go through the split layers as chunks (`groups_in_chunks`) rather than
    reordered for one pass: a channels_last image batch, whose grouped reshape would copy."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


@contextmanager
def groups_in_chunks(module: nn.Module):
    """Within the block, every split layer of `module` normalises x.chunk(S) one chunk after another."""
    layers = [m for m in module.modules() if isinstance(m, _SplitBatchNorm)]
    for m in layers:
        m.chunked = True
    try:
        yield
    finally:
        for m in layers:
            m.chunked = False


def interleave_groups(n: int, num_splits: int, device: torch.device) -> torch.Tensor:
    """The batch order in which one-pass group n mod S holds contiguous chunk S of the original order:
    x[order][i*S + g] = x[g*(N/S) + i]."""
    return torch.arange(n, device=device).view(num_splits, n // num_splits).t().reshape(-1)
