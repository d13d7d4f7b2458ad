"""PROBE.PROTOCOL main_lincls: the paper's linear probe, end-to-end on images through the frozen backbone.

Reference: object-cropping-ssl `main_lincls.py` (after MoCo's `main_lincls.py`) with the views of
`datasets/openimages_dataset_lineval.py` (`get_trainval_datasets('openimages_lin')`: phase `train_sup`,
its `train_transform`) and `openimages_dataset_test.py` (`test_trasform`):

* the backbone is frozen and kept in eval mode for the whole run ("BatchNorm in train mode may revise
  running mean/std ... which are part of the model parameters too"), and checked unchanged at the end
  (its `sanity_check`);
* one linear layer (`fc`, N(0, 0.01) weights, zero bias) trained with BCEWithLogitsLoss, SGD momentum
  0.9, weight decay 0, lr 30 multiplied by 0.1 at epochs 60 and 80 (`adjust_learning_rate`, set at the
  start of each epoch), 100 epochs, batch 256;
* training views RandomResizedCrop(224) (torchvision's default scale 0.08-1) + RandomHorizontalFlip,
  test views Resize(256) + CenterCrop(224), both on PIL images, normalised with ImageNet mean/std.

Where objcrop differs, on purpose (docs/fidelity.md): the score ("mAP") is mAP over the whole test set
once, after the last epoch. The released script's figure, the mean over test batches of each batch's mAP
(its `map`: non-interpolated AP per class with a positive in the batch, nan-averaged), is reported
beside it as "mAP_batch_mean" (`batch_mean_map`), for the final classifier (the released script also
keeps the best epoch's value, a selection on the test set that objcrop does not make).
"""
import copy
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from objcrop.errors import ObjcropError
from objcrop.pretrain.probe.features import MEAN, STD


def training_views(size: int):
    """RandomResizedCrop(size) + flip, as main_lincls trains (torchvision transforms on PIL images)."""
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])


def scoring_views(resize: int, size: int):
    """Resize(resize) of the shorter side + CenterCrop(size), as main_lincls scores."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])


def lr_at(epoch: int, base_lr: float, schedule: Sequence[int], gamma: float) -> float:
    """main_lincls's adjust_learning_rate: base_lr x gamma for every milestone <= epoch (0-based)."""
    lr = base_lr
    for milestone in schedule:
        lr *= gamma if epoch >= milestone else 1.0
    return lr


class LabelledImages(torch.utils.data.Dataset):
    """(view, multi-hot target) for each record; the view transform gets the PIL image."""

    def __init__(self, records: List[dict], targets: torch.Tensor, transform: Callable):
        self.records, self.targets, self.transform = records, targets, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        from PIL import Image

        from objcrop.datasets import read_image

        image = Image.fromarray(read_image(self.records[i]["file_name"]))
        return self.transform(image), self.targets[i]


class FrozenBackboneClassifier(nn.Module):
    """The frozen backbone (pooled res5 features) and a trainable linear layer."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad = False
        self.fc = nn.Linear(feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def train(self, mode: bool = True) -> "FrozenBackboneClassifier":
        """Only the head follows train(): the backbone stays in eval mode, BN statistics untouched."""
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = self.backbone(x)
        return self.fc(feats.flatten(1))


def _loader(records, targets, transform, batch_size: int, workers: int, shuffle: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(LabelledImages(records, targets, transform), batch_size=batch_size,
                                       shuffle=shuffle, num_workers=workers, generator=g,
                                       worker_init_fn=_seed_worker if workers else None)


def _seed_worker(worker_id: int) -> None:
    import random

    seed = torch.initial_seed() % 2 ** 32  # set by the DataLoader from its generator: the run's seed
    random.seed(seed)
    np.random.seed(seed)


def train_lincls(model: FrozenBackboneClassifier, records, targets, lc, seed: int, device: torch.device,
                 log: Optional[Callable[[dict], None]] = None) -> FrozenBackboneClassifier:
    """Train model.fc as main_lincls does (`lc` is the LINCLS config node); returns the model on the CPU.

    Raises ObjcropError when the backbone changed (its sanity check): the protocol forbids it."""
    before = copy.deepcopy(model.backbone.state_dict())
    torch.manual_seed(seed)  # the views' random draws in the main process
    loader = _loader(records, targets, training_views(lc.TRAIN_SIZE), lc.BATCH_SIZE, lc.NUM_WORKERS, True, seed)
    opt = torch.optim.SGD(model.fc.parameters(), lr=lc.LR, momentum=lc.MOMENTUM, weight_decay=lc.WEIGHT_DECAY)
    loss_fn = nn.BCEWithLogitsLoss()
    model.to(device)
    for epoch in range(lc.EPOCHS):
        lr = lr_at(epoch, lc.LR, lc.SCHEDULE, lc.GAMMA)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        total, seen = 0.0, 0
        for images, y in loader:
            loss = loss_fn(model(images.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, seen = total + float(loss) * len(y), seen + len(y)
        if log:
            log({"epoch": epoch, "lr": lr, "loss": total / max(seen, 1)})
    model.cpu()
    check_backbone_unchanged(before, model.backbone.state_dict())
    return model


def check_backbone_unchanged(before: dict, after: dict) -> None:
    """main_lincls's sanity_check: every backbone tensor (BN running statistics included) as loaded."""
    changed = [k for k, v in after.items() if not torch.equal(v.cpu(), before[k].cpu())]
    if changed:
        raise ObjcropError(f"main_lincls: the frozen backbone changed during the probe ({', '.join(changed[:4])}"
                           f"{', ...' if len(changed) > 4 else ''}); the protocol trains the linear layer only")


@torch.no_grad()
def predict(model: FrozenBackboneClassifier, records, targets, lc, device: torch.device) -> torch.Tensor:
    """Sigmoid scores of the test views (Resize + CenterCrop), in the records' order."""
    loader = _loader(records, targets, scoring_views(lc.TEST_RESIZE, lc.TEST_SIZE), lc.BATCH_SIZE, lc.NUM_WORKERS,
                     False, 0)
    model.eval().to(device)
    scores = [torch.sigmoid(model(images.to(device))).float().cpu() for images, _ in loader]
    model.cpu()
    return torch.cat(scores) if scores else torch.zeros(0, model.fc.out_features)


def released_map(scores: np.ndarray, targets: np.ndarray) -> float:
    """main_lincls's `map` of one batch: per class with a positive, the mean precision at each positive
    of the ranking by descending score; the mean over those classes (nan when none has a positive)."""
    aps = []
    for c in range(scores.shape[1]):
        tp = targets[np.argsort(-scores[:, c], kind="stable"), c] == 1
        if tp.sum() == 0:
            continue
        precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
        aps.append(float(precision[tp].sum() / tp.sum()))
    return float(np.mean(aps)) if aps else float("nan")


def batch_mean_map(scores: np.ndarray, targets: np.ndarray, batch_size: int) -> float:
    """The released validation figure: the mean of released_map over consecutive test batches, each batch
    weighted by its size (its AverageMeter); batches without any positive are skipped."""
    total, count = 0.0, 0
    for i in range(0, len(scores), batch_size):
        m = released_map(scores[i:i + batch_size], targets[i:i + batch_size])
        if not np.isnan(m):
            total, count = total + m * len(scores[i:i + batch_size]), count + len(scores[i:i + batch_size])
    return total / count if count else float("nan")
