"""Finding the ResNet backbone in a checkpoint: one implementation, for the probe and the converter.

Pure torch (no detectron2, no stage imports), so pretraining's probe and `objcrop convert` read
checkpoints the same way. The API:

    resnet_stem(tensors) -> str                        "imagenet" | "cifar" | "" by conv1's kernel
    read_backbone(path: str, fmt: str = "auto") -> Backbone
        load_checkpoint(path) + detect_format + extract_backbone in one call.
    load_checkpoint(path: str) -> object
        torch.load(map_location="cpu", weights_only=True): tensors and plain containers only, never
        arbitrary pickled objects; anything unreadable raises CheckpointError naming the file.
    detect_format(obj, source: str) -> str            one of FORMATS, or CheckpointError
    extract_backbone(obj, fmt: str, source: str) -> Backbone

    Backbone.format      one of FORMATS
    Backbone.location    where in the file it sat, for messages: "['state_dict']['module.encoder_q.*']"
    Backbone.tensors     OrderedDict {torchvision ResNet name: CPU tensor}, e.g. "layer1.0.conv1.weight";
                         as stored, so it may still hold `fc.*` (classifier or MLP head) and BN
                         `num_batches_tracked` counters: drop what your model does not have
    Backbone.provenance  objcrop.records.Provenance stored in an objcrop checkpoint (its "pretrain"
                         block, else its top-level method/arch); None for foreign files, which carry none

`source` is how the file is named in error messages (usually its path). Every failure is a
CheckpointError (objcrop.errors) naming it.

Each format is a place (a nested dict) and a key prefix under which a torchvision-named ResNet
sits. Only layouts whose key names were checked against the codebase that writes them are listed:

  objcrop            {"objcrop_checkpoint": 1, "backbone": {conv1.weight, ...}, "pretrain": {...}}
  moco               MoCo v1/v2 (facebookresearch/moco main_moco.py):
                     {"state_dict": {"module.encoder_q.conv1.weight", ...}}; MoCo v3:
                     "module.base_encoder.*"; also without the DDP "module." prefix
  byol               lucidrains/byol-pytorch learner state dict: "online_encoder.net.*";
                     sthalles/PyTorch-BYOL: {"online_network_state_dict": {"encoder.0.weight", ...}}
                     whose encoder is nn.Sequential(*resnet.children()[:-1])
  backbone-prefixed  mmselfsup (extract_backbone_weights strips "backbone.") and solo-learn
                     Lightning checkpoints: {"state_dict": {"backbone.conv1.weight", ...}}
  torchvision        a plain ResNet state dict (torchvision's ImageNet files, `torch.save(resnet.state_dict())`),
                     also under "state_dict"/"model" or with a DDP "module." prefix
  lightly            lightly's examples (examples/pytorch_lightning/moco.py, ...) keep the ResNet as
                     backbone = nn.Sequential(*resnet.children()[:-1]): a Lightning checkpoint
                     {"state_dict": {"backbone.0.weight", "backbone.4.0.conv1.weight", ...}}, or
                     `torch.save(backbone.state_dict())` with keys "0.weight", "4.0.conv1.weight", ...

Detection tries the formats in this order and takes the first that holds a ResNet stem
(conv1.weight), so the momentum/target copies (encoder_k, backbone_momentum, ...) are never read.
"""
import dataclasses
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import torch

from objcrop.errors import CheckpointError
from objcrop.io import atomic_path
from objcrop.records import RESNET_STEMS, Provenance

FORMATS = ("objcrop", "moco", "byol", "backbone-prefixed", "torchvision", "lightly")
# Formats whose name says the method that wrote them; a file of another codebase carries no
# description of its pretraining, so its provenance names the method only where the layout does.
_METHOD_OF_LAYOUT = {"moco": "moco", "byol": "byol"}


# conv1's kernel size -> the stem (objcrop.records.RESNET_STEMS): torchvision's 7x7 stride-2 conv1 with
# a max-pool, or the CIFAR stem's 3x3 stride-1 conv1 without one (the max-pool has no weights).
_STEM_OF_KERNEL = {7: RESNET_STEMS[0], 3: "cifar"}


def resnet_stem(tensors: Mapping[str, torch.Tensor]) -> str:
    """The stem of a torchvision-named ResNet state dict by its `conv1.weight` ("imagenet" or
    "cifar"); "" when there is no conv1 or its kernel is of another size."""
    weight = tensors.get("conv1.weight")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        return ""
    return _STEM_OF_KERNEL.get(int(weight.shape[-1]), "")


def method_of_format(fmt: str) -> str:
    """The pretraining method a foreign checkpoint's layout implies ("unknown" where it implies none)."""
    return _METHOD_OF_LAYOUT.get(fmt, "unknown")

# format -> [(container key or None for the top level, key prefix), ...], tried in order.
_LOCATIONS: Dict[str, List[Tuple[Optional[str], str]]] = {
    "moco": [(c, p) for c in ("state_dict", None)
             for p in ("module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder.")],
    "byol": [(c, p) for c in (None, "state_dict") for p in ("module.online_encoder.net.", "online_encoder.net.")]
            + [("online_network_state_dict", "encoder."), ("online_network_state_dict", "module.encoder.")],
    "backbone-prefixed": [(c, p) for c in ("state_dict", None, "model") for p in ("module.backbone.", "backbone.")],
    "torchvision": [(c, p) for c in (None, "state_dict", "model") for p in ("", "module.")],
    # Last: a bare "0.weight" key is too common to be tried before the named layouts.
    "lightly": [("state_dict", "backbone."), ("state_dict", "module.backbone."), (None, "backbone."), (None, "")],
}
# Locations that hold nn.Sequential(*resnet.children()[:-1]) rather than a ResNet module.
_SEQUENTIAL = {("byol", "online_network_state_dict"), ("lightly", "state_dict"), ("lightly", None)}

# sthalles/PyTorch-BYOL keeps the ResNet as nn.Sequential(conv1, bn1, relu, maxpool, layer1..4, avgpool).
_SEQUENTIAL_RESNET = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_SEQ_INDEX = re.compile(r"^(\d+)(\..*)$")


@dataclasses.dataclass
class Backbone:
    """A ResNet backbone found in a checkpoint, in torchvision names (see the module docstring)."""

    format: str
    location: str
    tensors: "OrderedDict[str, torch.Tensor]"
    provenance: Optional[Provenance]


def read_backbone(path: str, fmt: str = "auto") -> Backbone:
    """The backbone of the checkpoint file `path`, its layout detected (fmt="auto") or forced."""
    obj = load_checkpoint(path)
    return extract_backbone(obj, detect_format(obj, path) if fmt == "auto" else fmt, path)


def save_checkpoint(obj: object, path: str) -> None:
    """torch.save `obj` to `path`, atomically (objcrop.io.atomic_path), with bytes that depend on the
    contents only: given a file name, torch names the archive's inner folder after it, and the
    temporary name is random, so two identical runs would write different bytes (and sha256s)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def load_checkpoint(path: str) -> object:
    """torch.load with weights_only=True; anything unreadable raises CheckpointError naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: file not found") from e
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: cannot be read with torch.load(weights_only=True) "
                              f"(a damaged file, or one holding Python objects rather than tensors): {first_line}") from e


def detect_format(obj: object, source: str) -> str:
    """The first format of FORMATS whose layout holds a ResNet stem (conv1.weight) in `obj`."""
    if isinstance(obj, Mapping) and "objcrop_checkpoint" in obj and isinstance(obj.get("backbone"), Mapping):
        return "objcrop"
    for fmt in FORMATS[1:]:
        if _find_location(obj, fmt) is not None:
            return fmt
    keys = _top_level_keys(obj)
    raise CheckpointError(f"{source}: no ResNet backbone found in any known layout ({', '.join(FORMATS)}); "
                          f"top-level keys: {keys}. Use --format to force one, or save the torchvision state_dict")


def extract_backbone(obj: object, fmt: str, source: str) -> Backbone:
    """The torchvision-named backbone tensors of `obj` read as format `fmt`."""
    if fmt == "objcrop":
        if not (isinstance(obj, Mapping) and isinstance(obj.get("backbone"), Mapping)):
            raise CheckpointError(f"{source}: not an objcrop checkpoint (no 'backbone' state dict); "
                                  f"top-level keys: {_top_level_keys(obj)}")
        tensors = _tensors(obj["backbone"], "", None, source)
        return Backbone(fmt, "['backbone']", tensors, _stored_provenance(obj))
    if fmt not in _LOCATIONS:
        raise CheckpointError(f"{source}: unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    found = _find_location(obj, fmt)
    if found is None:
        raise CheckpointError(f"{source}: no ResNet backbone in the {fmt} layout (looked for "
                              f"{', '.join(sorted({p + '*' for _, p in _LOCATIONS[fmt]}))}); top-level keys: {_top_level_keys(obj)}")
    container, prefix = found
    state = obj if container is None else obj[container]
    rename = _from_sequential if (fmt, container) in _SEQUENTIAL else None
    where = f"{'' if container is None else f'[{container!r}]'}[{prefix + '*'!r}]"
    return Backbone(fmt, where, _tensors(state, prefix, rename, source), None)


def _stored_provenance(obj: Mapping) -> Optional[Provenance]:
    """The checkpoint's "pretrain" block; a checkpoint without one still names its method and arch."""
    block = obj.get("pretrain")
    if isinstance(block, Mapping) and block:
        return Provenance.from_dict(block)
    known = {k: obj[k] for k in ("method", "arch") if isinstance(obj.get(k), str) and obj[k]}
    return Provenance.from_dict(known) if known else None


def _find_location(obj: object, fmt: str) -> Optional[Tuple[Optional[str], str]]:
    for container, prefix in _LOCATIONS[fmt]:
        state = obj if container is None else (obj.get(container) if isinstance(obj, Mapping) else None)
        if not isinstance(state, Mapping):
            continue
        rename = _from_sequential if (fmt, container) in _SEQUENTIAL else (lambda n: n)
        stem = [k for k in state if isinstance(k, str) and k.startswith(prefix) and rename(k[len(prefix):]) == "conv1.weight"]
        if stem:
            return container, prefix
    return None


def _tensors(state: Mapping, prefix: str, rename: Optional[Callable[[str], str]], source: str) -> "OrderedDict[str, torch.Tensor]":
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in state.items():
        if not (isinstance(key, str) and key.startswith(prefix)):
            continue
        name = key[len(prefix):]
        if rename is not None:
            name = rename(name)
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
        if name in out:
            # Two keys landing on one name would silently keep the later tensor.
            raise CheckpointError(f"{source}: two entries map to the backbone name {name!r}")
        out[name] = value.detach().cpu()
    return out


def _from_sequential(name: str) -> str:
    """'4.0.conv1.weight' (index in nn.Sequential(*resnet.children())) -> 'layer1.0.conv1.weight'."""
    m = _SEQ_INDEX.match(name)
    if m and m.group(1) in _SEQUENTIAL_RESNET:
        return _SEQUENTIAL_RESNET[m.group(1)] + m.group(2)
    return name


def _top_level_keys(obj: object, limit: int = 8) -> str:
    if not isinstance(obj, Mapping):
        return f"(not a dict but a {type(obj).__name__})"
    keys = [str(k) for k in obj]
    return ", ".join(keys[:limit]) + (f", … ({len(keys)} in all)" if len(keys) > limit else "") if keys else "(empty)"
