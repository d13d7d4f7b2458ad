"""What objcrop needs that a user brings: PyTorch, torchvision and (for detection) detectron2.

`setup.py` declares every other dependency (`install_requires`, extras); these three are left
out on purpose — a researcher's own CUDA build of torch or source build of detectron2 must not
be replaced by pip. Instead each stage checks them when it is imported and stops with one line
that says what is missing and how to get it, and `objcrop doctor` reports the same checks.
"""
import importlib
from typing import Optional, Tuple

from objcrop.errors import ObjcropError

# (module, minimum version, how to get it). The minimums are the oldest releases the code uses
# APIs of: torchvision's transforms v2 functionals and tv_tensors (0.16), torch.compile-era
# torch.load(weights_only=True) (2.1), detectron2 0.6's config and evaluators.
USER_PACKAGES = {
    "torch": ((2, 1), "install PyTorch for your platform (https://pytorch.org), or `make setup` for the pinned set"),
    "torchvision": ((0, 16), "install the torchvision that matches your torch, or `make setup` for the pinned set"),
    "detectron2": ((0, 6), "build detectron2 >= 0.6 from source, `pip install sal-detectron2==0.7.2` "
                           "(Python 3.10, torch 2.3), or `make setup`"),
}


class MissingRequirement(ObjcropError):
    """A package the user brings is missing or too old."""


def parse_version(text: str) -> Tuple[int, ...]:
    """(major, minor) of a version string such as '2.3.1+cu121' or '0.7.2'; () when unreadable."""
    parts = []
    for piece in str(text).split("+")[0].split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check(module: str) -> Optional[str]:
    """None when `module` imports at its minimum version, else the one-line reason."""
    minimum, hint = USER_PACKAGES[module]
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # a broken install raises more than ImportError (OSError for a bad .so)
        return f"objcrop needs {module} >= {'.'.join(map(str, minimum))}, which does not import " \
               f"({type(e).__name__}): {hint}"
    found = parse_version(getattr(mod, "__version__", ""))
    if found and found < minimum:
        return f"objcrop needs {module} >= {'.'.join(map(str, minimum))}, found {mod.__version__}: {hint}"
    return None


def require(*modules: str) -> None:
    """Raise MissingRequirement naming every missing or too old package among `modules`."""
    problems = [p for p in (check(m) for m in modules) if p]
    if problems:
        raise MissingRequirement("; ".join(problems))
