"""torchvision ResNet parameter names -> detectron2 ResNet parameter names.

One pure function, no I/O and no detectron2: the converter, the verifier and
the tests all go through `torchvision_to_detectron2`, so there is exactly one
place where the two naming schemes meet.

    conv1.weight                      -> stem.conv1.weight
    bn1.running_mean                  -> stem.conv1.norm.running_mean
    layer3.5.conv2.weight             -> res4.5.conv2.weight
    layer3.5.bn2.bias                 -> res4.5.conv2.norm.bias
    layer2.0.downsample.0.weight      -> res3.0.shortcut.weight
    layer2.0.downsample.1.weight      -> res3.0.shortcut.norm.weight

The same names hold for BasicBlock (ResNet-18/34) and Bottleneck (ResNet-50+)
networks, and for mmcv/mmselfsup's ResNet, which copies torchvision's names.
"""
import re
from typing import Dict, Iterable, List, Tuple

from objcrop.errors import CheckpointError

# Dropped on purpose: the classifier (or an MLP head hung on `fc`) has no
# detectron2 counterpart, and `num_batches_tracked` is a counter detectron2's
# norms neither need nor (FrozenBN) have.
_DROPPED = (re.compile(r"^fc(\.|$)"), re.compile(r"(^|\.)num_batches_tracked$"))

_STEM = re.compile(r"^(conv1)\.(weight)$|^bn1\.(weight|bias|running_mean|running_var)$")
_BLOCK = re.compile(
    r"^layer(?P<stage>[1-4])\.(?P<block>\d+)\."
    r"(?:(?P<conv>conv[1-3])\.weight"
    r"|(?P<bn>bn[1-3])\.(?P<bn_field>weight|bias|running_mean|running_var)"
    r"|downsample\.0\.weight"
    r"|downsample\.1\.(?P<ds_field>weight|bias|running_mean|running_var))$"
)
# A detectron2 backbone parameter name, wherever the model nests the backbone
# (backbone.res2..., backbone.bottom_up.res2..., roi_heads.res5... in C4).
D2_BACKBONE_NAME = re.compile(r"(?:^|\.)((?:stem|res[2-5]\.\d+)\..+)$")


def is_dropped(name: str) -> bool:
    return any(p.search(name) for p in _DROPPED)


def _map_one(name: str) -> str:
    """The detectron2 name of one torchvision backbone name, or '' when it is not one."""
    m = _STEM.match(name)
    if m:
        return "stem.conv1.weight" if m.group(1) else f"stem.conv1.norm.{m.group(3)}"
    m = _BLOCK.match(name)
    if not m:
        return ""
    prefix = f"res{int(m.group('stage')) + 1}.{m.group('block')}"
    if m.group("conv"):
        return f"{prefix}.{m.group('conv')}.weight"
    if m.group("bn"):
        return f"{prefix}.conv{m.group('bn')[2]}.norm.{m.group('bn_field')}"
    if m.group("ds_field"):
        return f"{prefix}.shortcut.norm.{m.group('ds_field')}"
    return f"{prefix}.shortcut.weight"


def torchvision_to_detectron2(names: Iterable[str], source: str = "state dict") -> Dict[str, str]:
    """Map torchvision ResNet names to detectron2 names; returns {torchvision: detectron2}.

    fc.* and num_batches_tracked are dropped. Raises CheckpointError (naming
    `source`) when no name is a backbone name, when some name is neither a
    backbone name nor dropped (an unknown layout must not lose tensors
    silently), or when two names would land on the same detectron2 name.
    """
    names = list(names)
    mapping: Dict[str, str] = {}
    unknown: List[str] = []
    for name in names:
        if is_dropped(name):
            continue
        target = _map_one(name)
        if target:
            mapping[name] = target
        else:
            unknown.append(name)
    if not mapping:
        raise CheckpointError(f"{source}: no ResNet backbone parameters found among {len(names)} keys "
                              f"(e.g. {_preview(names)}); expected torchvision names such as conv1.weight, layer1.0.conv1.weight")
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} keys are not torchvision ResNet backbone names and would be lost: "
                              f"{_preview(unknown)}")
    targets: Dict[str, str] = {}
    for src, dst in mapping.items():
        if dst in targets:
            raise CheckpointError(f"{source}: {targets[dst]} and {src} both map to detectron2 name {dst}")
        targets[dst] = src
    return mapping


def _layout(names: Iterable[str], block: "re.Pattern", stages: range) -> Tuple[str, Tuple[int, ...]]:
    """('bottleneck'|'basic', blocks per stage) from the names `block` matches (groups stage, block;
    a third conv or BN of a block, conv3/bn3, makes it a bottleneck)."""
    blocks = {s: set() for s in stages}
    bottleneck = False
    for name in names:
        m = block.search(name)
        if m:
            blocks[int(m.group("stage"))].add(int(m.group("block")))
            bottleneck |= bool({"conv3", "bn3"} & set(m.groupdict().values()))
    return ("bottleneck" if bottleneck else "basic"), tuple(len(blocks[s]) for s in stages)


def infer_resnet_layout(names: Iterable[str]) -> Tuple[str, Tuple[int, ...]]:
    """('bottleneck'|'basic', blocks per stage) of torchvision ResNet names, e.g. ('bottleneck', (3, 4, 6, 3))."""
    return _layout(names, _BLOCK, range(1, 5))


_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50,
           ("bottleneck", (3, 4, 23, 3)): 101, ("bottleneck", (3, 8, 36, 3)): 152}


def describe_resnet(names: Iterable[str]) -> str:
    """'ResNet-50' or a description of an unusual layout, for messages."""
    kind, blocks = infer_resnet_layout(names)
    depth = _DEPTHS.get((kind, blocks))
    return f"ResNet-{depth}" if depth else f"a ResNet with {kind} blocks {'-'.join(map(str, blocks))}"


def resnet_depth(names: Iterable[str]) -> int:
    """Depth (18, 34, 50, 101, 152) of torchvision ResNet names, 0 when the layout is not a standard one."""
    return _DEPTHS.get(infer_resnet_layout(names), 0)


_D2_BLOCK = re.compile(r"(?:^|\.)res(?P<stage>[2-5])\.(?P<block>\d+)\.(?P<layer>conv[1-3]|shortcut)\.")


def detectron2_resnet_depth(names: Iterable[str]) -> int:
    """Depth of detectron2 ResNet names ("res4.5.conv3.weight", a converted .pkl's), 0 when unusual."""
    return _DEPTHS.get(_layout(names, _D2_BLOCK, range(2, 6)), 0)


def _preview(names: List[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … and {len(names) - limit} more" if len(names) > limit else "")
