"""Is the embedded dataset learnable at CPU scale? (an experiment, not a test)

Trains a supervised multi-label ResNet on the train split for a fixed wall-clock
budget, then scores it and a random-init backbone of the same architecture with
the same linear probe: one-vs-rest logistic regression (scikit-learn) on frozen,
globally pooled features, its C chosen on the val split, mAP on the test split
(the supervised model's own head is scored too). A dataset is learnable when
the supervised backbone clearly beats random init (docs/DESIGN.md, "Small-scale data": aim >= 0.7 mAP).

    objcrop data synth --out /tmp/synth2k --num-images 2000 --seed 0
    python benchmarks/learnability.py --data /tmp/synth2k --minutes 5 --json /tmp/learnability.json

The recipe follows the calibration in docs/results.md: ResNet-18, AdamW lr 2e-3,
wd 0.05, batch 32, images shrunk to 64 px for training and features.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from objcrop.datasets import load_dataset, multilabel_targets, read_image
from objcrop.checkpoints import save_checkpoint
from objcrop.io import sha256_file, write_json_atomic
from objcrop import records
from objcrop.pretrain.engine.results import device_name

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_split(data: str, split: str, size: int):
    """Images as a normalised float tensor [N, 3, size, size] and multi-label targets [N, K]."""
    records, meta = load_dataset(f"synth:{data}:{split}")
    imgs = np.stack([read_image(r["file_name"]) for r in records])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    x = (x - MEAN) / STD
    return x, torch.from_numpy(multilabel_targets(records, len(meta["thing_classes"]))), meta["thing_classes"]


def build(arch: str, num_outputs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_outputs)
    return model


def train_supervised(model: nn.Module, x: torch.Tensor, y: torch.Tensor, minutes: float, batch: int,
                     lr: float, wd: float, seed: int, max_samples: int = None,
                     device: torch.device = torch.device("cpu")) -> dict:
    """Multi-label BCE training with random flips until the time budget (or the sample budget) is spent.
    The data stays on the CPU (the flips are drawn there, so a run's batches are the same on any device)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    model.train()
    start, seen, steps, losses = time.time(), 0, 0, []
    deadline = start + minutes * 60
    done = lambda: time.time() >= deadline or (max_samples is not None and seen >= max_samples)  # noqa: E731
    while not done():
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            loss = F.binary_cross_entropy_with_logits(model(xb.to(device)), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
            steps += 1
            losses.append(loss.detach())
            if steps % 50 == 0:
                print(f"  step {steps:5d}  samples {seen:6d}  loss {float(torch.stack(losses[-50:]).mean()):.4f}  "
                      f"{seen / (time.time() - start):.0f} img/s", flush=True)
            if done():
                break
    return {"steps": steps, "samples": seen, "epochs": seen / len(x), "final_loss": float(torch.stack(losses[-50:]).mean()),
            "train_seconds": time.time() - start}


@torch.no_grad()
def features(model: nn.Module, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    fc, model.fc = model.fc, nn.Identity()
    out = torch.cat([model(x[i:i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]).numpy()
    model.fc = fc
    return out


def _map(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    keep = y.sum(0) > 0
    return float(average_precision_score(y[:, keep], scores[:, keep], average="macro"))


def probe_map(model: nn.Module, splits: dict, cs=(0.01, 0.1, 1.0)) -> dict:
    """Test mAP of one-vs-rest logistic regression on standardised frozen features, C chosen on val."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = {k: (features(model, x), y.numpy()) for k, (x, y) in splits.items()}
    best = None
    for c in cs:
        clf = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=2000, C=c)))
        clf.fit(*feats["train"])
        val = _map(feats["val"][1], clf.predict_proba(feats["val"][0]))
        if best is None or val > best[0]:
            best = (val, c, _map(feats["test"][1], clf.predict_proba(feats["test"][0])))
    return {"val_mAP": best[0], "C": best[1], "test_mAP": best[2]}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a directory written by `objcrop data synth`")
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget of the supervised training")
    p.add_argument("--samples", type=int, default=None,
                   help="stop after this many training samples instead (a budget that does not depend on machine "
                        "load; docs/results.md's 5 CPU minutes were about 17,000); --minutes still caps the run")
    p.add_argument("--arch", default="resnet18", help="torchvision ResNet")
    p.add_argument("--size", type=int, default=64, help="image side for training and features")
    p.add_argument("--batch", type=int, default=32, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    p.add_argument("--wd", type=float, default=0.05, help="AdamW weight decay")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="where the model trains and computes features (auto: cuda when available); "
                        "the probe's logistic regression always runs on the CPU")
    p.add_argument("--json", default=None, help="write the numbers to this json file")
    p.add_argument("--save-backbone", default=None,
                   help="save the supervised backbone (a torchvision state dict without the fc head) here, "
                        "for `objcrop probe --weights FILE` and the study's 'supervised' reference row")
    return p


def _supervised_head_map(model: torch.nn.Module, x_te: torch.Tensor, y_te: torch.Tensor, device) -> float:
    with torch.no_grad():
        model.eval()
        logits = torch.cat([model(x_te[i:i + 256].to(device)).float().cpu() for i in range(0, len(x_te), 256)])
    return _map(y_te.numpy(), torch.sigmoid(logits).numpy())


def _save_backbone(model: torch.nn.Module, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_checkpoint({k: v.cpu() for k, v in model.state_dict().items() if not k.startswith("fc.")}, path)


def main(argv=None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device (use --device auto or cpu)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")

    t0 = time.time()
    x_tr, y_tr, classes = load_split(args.data, "train", args.size)
    x_va, y_va, _ = load_split(args.data, "val", args.size)
    x_te, y_te, _ = load_split(args.data, "test", args.size)
    splits = {"train": (x_tr, y_tr), "val": (x_va, y_va), "test": (x_te, y_te)}
    print(f"data: {len(x_tr)} train / {len(x_te)} test images, {len(classes)} classes, {args.size} px "
          f"(loaded in {time.time() - t0:.1f}s)", flush=True)
    chance = float(y_te.numpy().mean(0)[y_te.numpy().sum(0) > 0].mean())

    results = {"data": os.path.abspath(args.data), "arch": args.arch, "size": args.size, "seed": args.seed,
               "train_images": len(x_tr), "test_images": len(x_te), "classes": len(classes),
               "chance_mAP": chance, "torch_threads": torch.get_num_threads(),
               # what computed it, as a pretraining run's results.json says: a second training on another
               # CPU's float kernels (AVX2 or AVX-512, AMD or Intel) is another draw, not the same bytes
               "device": device_name(device), "torch": torch.__version__, "code": records.code_identity()}
    random_init = build(args.arch, len(classes), args.seed).to(device)
    results["random_init_probe"] = probe_map(random_init, splits)
    results["random_init_mAP"] = results["random_init_probe"]["test_mAP"]
    print(f"random init     probe mAP {results['random_init_mAP']:.3f}  (chance {chance:.3f})", flush=True)

    supervised = build(args.arch, len(classes), args.seed).to(device)
    budget = f"{args.samples} samples" if args.samples else f"{args.minutes:g} min"
    print(f"supervised training for {budget} ...", flush=True)
    results["supervised_training"] = train_supervised(supervised, x_tr, y_tr, args.minutes, args.batch,
                                                      args.lr, args.wd, args.seed, args.samples, device)
    results["supervised_probe"] = probe_map(supervised, splits)
    results["supervised_mAP"] = results["supervised_probe"]["test_mAP"]
    results["supervised_head_mAP"] = _supervised_head_map(supervised, x_te, y_te, device)
    tr = results["supervised_training"]
    print(f"supervised      probe mAP {results['supervised_mAP']:.3f}  ({tr['samples']} samples, "
          f"{tr['epochs']:.1f} epochs in {tr['train_seconds']:.0f}s)", flush=True)
    if args.save_backbone:
        _save_backbone(supervised, args.save_backbone)
        # names this training in what stands on it: the .pkl `objcrop convert` makes of it keeps this hash, and
        # each fine-tuning's results.json its source_sha256 (one seed on one CPU repeats it byte for byte)
        results["backbone_sha256"] = sha256_file(args.save_backbone)
    if args.json:
        write_json_atomic(args.json, results)
    print(json.dumps({k: results[k] for k in ("chance_mAP", "random_init_mAP", "supervised_mAP", "supervised_head_mAP")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
