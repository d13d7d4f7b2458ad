"""The linear classifier of the probe: one layer on standardised frozen features, BCE per class."""
import contextlib

import torch
from torch import nn


def train_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, epochs: int = 100, lr: float = 0.1,
                       batch_size: int = 256, weight_decay: float = 0.0, seed: int = 0, log=None,
                       device: torch.device = torch.device("cpu")) -> nn.Module:
    """A linear layer on standardised features, BCE per class, SGD with momentum and a cosine schedule.

    Standardising (train-set mean/std) takes the place of the paper's lr of 30 on raw pooled features:
    the same optimum, reached with ordinary learning rates. Returns a CPU module mapping raw features to logits.
    """
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    linear = nn.Linear(train_x.shape[1], train_y.shape[1])
    torch.manual_seed(seed)
    nn.init.normal_(linear.weight, std=0.01)
    nn.init.zeros_(linear.bias)
    linear.to(device)
    opt = torch.optim.SGD(linear.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    x = ((train_x - mean) / std).to(device)
    loss_fn = nn.BCEWithLogitsLoss()
    with _threads_for(batch_size * x.shape[1] * train_y.shape[1] if device.type == "cpu" else 1 << 30):
        _fit(linear, x, train_y.to(device), loss_fn, opt, sched, epochs, batch_size, g, log)
    return nn.Sequential(Standardise(mean, std), linear.cpu()).eval()


@contextlib.contextmanager
def _threads_for(work: int):
    """One thread for tiny matrix products: thread wake-ups cost more than they save there, and on a
    busy machine multi-threaded tiny steps are many times slower."""
    before = torch.get_num_threads()
    if work < 4_000_000:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit(linear, x, train_y, loss_fn, opt, sched, epochs, batch_size, g, log) -> None:
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=g)
        total = torch.zeros((), device=x.device)  # summed on the device: no sync per step
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size].to(x.device)
            loss = loss_fn(linear(x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        sched.step()
        if log:
            log(epoch, float(total) / len(x))


class Standardise(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
