"""The frozen backbone a probe scores: any checkpoint objcrop.checkpoints reads, or random init.

The backbone is found by objcrop.checkpoints (the one finder, shared with `objcrop convert`): an
objcrop checkpoint, MoCo / BYOL / mmselfsup / solo-learn layouts, or a plain torchvision ResNet
state dict. Its provenance (the "pretrain" block of results.json) is the checkpoint's own for an
objcrop file; a torchvision file is the supervised reference (e.g. the ImageNet baseline you
supply, or benchmarks/learnability.py's bound), its training seed unknown unless given; another SSL
codebase's file is named by its method. `objcrop probe --pretrain KEY=VALUE` sets fields by hand, as
`objcrop convert --pretrain` does for the .pkl of the same file, so that its probe and detection rows match.
"""
import os
from typing import Mapping, Optional, Tuple

import torch
from torch import nn

from objcrop.checkpoints import method_of_format, read_backbone, resnet_stem
from objcrop.errors import CheckpointError
from objcrop.io import sha256_file
from objcrop.records import RESNET_STEMS, Provenance



def load_backbone(weights: str, arch: str = "", seed: int = 0, random_stem: str = RESNET_STEMS[0],
                  provenance_overrides: Optional[Mapping[str, object]] = None
                  ) -> Tuple[nn.Module, str, Provenance, str]:
    """(model, arch, provenance, weights id) for a checkpoint file or "random" (random init seeded with
    `seed`, with `random_stem`); `provenance_overrides` ({field: value}) are applied to the provenance last.

    `arch` "" builds the checkpoint's own ResNet; its stem is always the file's own (conv1's kernel:
    3x3 the CIFAR stem, 7x7 ImageNet's), recorded in the provenance, so a CIFAR-stem backbone probes
    without a flag. A file that does not fit the model raises a CheckpointError naming the file and the
    offending keys."""
    from objcrop.pretrain.models import build_resnet, infer_resnet_arch, load_backbone_weights

    if weights == "random":
        arch = arch or "resnet50"
        torch.manual_seed(seed)
        model, _ = build_resnet(arch, stem=random_stem)
        provenance = Provenance.random_init(arch, seed).replace(stem=random_stem, **(provenance_overrides or {}))
        return model, arch, provenance, f"random-{provenance.arch_label}-s{seed}"
    if not os.path.isfile(weights):
        raise CheckpointError(f"{weights}: weights file not found")
    found = read_backbone(weights)
    file_arch = infer_resnet_arch(found.tensors)
    if found.format == "objcrop":
        provenance = found.provenance or Provenance()
        if provenance.arch != "unknown":
            file_arch = provenance.arch
    elif found.format == "torchvision":
        # The probe's seed seeds the classifier, not the file's training: that seed is unknown here
        # (--pretrain seed=K names it), as in detection.results.provenance_of_weights.
        provenance = Provenance.supervised(file_arch or arch, os.path.basename(weights), None)
    else:
        provenance = Provenance(method=method_of_format(found.format),
                                arch=file_arch or arch or "unknown", dataset=os.path.basename(weights))
    arch = arch or file_arch or "resnet50"
    stem = resnet_stem(found.tensors) or provenance.stem  # an unusual conv1 fails in load_backbone_weights
    provenance = provenance.replace(stem=stem, **(provenance_overrides or {}))
    model, _ = build_resnet(arch, stem=stem)
    load_backbone_weights(model, found.tensors, weights)  # CheckpointError naming keys/shapes on a mismatch
    return model, arch, provenance, sha256_file(weights)[:16]
