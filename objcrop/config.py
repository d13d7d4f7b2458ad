"""Config helpers shared by the stages, in detectron2's idiom.

A stage builds its defaults as a CfgNode in code, a YAML file overrides them
(with `_BASE_` inheritance), `--opts KEY VALUE ...` overrides the file, and the
merged config is written next to every output. fvcore's CfgNode is used (it is
what detectron2's is built on) so that pretraining needs no detectron2.
"""
import hashlib
import os
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import yaml
from fvcore.common.config import CfgNode

from objcrop.errors import ConfigError
from objcrop.io import write_text_atomic

__all__ = ["CfgNode", "merge_config", "write_config", "config_hash", "config_changes", "flat_config", "packaged_config"]


def packaged_config(relpath: str) -> str:
    """Path of a YAML shipped in objcrop.eval_configs (e.g. "pretrain/demo.yaml").

    A path that exists as given is returned unchanged, so users can pass their own files.
    """
    if os.path.isfile(relpath):
        return relpath
    import objcrop.eval_configs as pkg

    candidate = os.path.join(os.path.dirname(pkg.__file__), relpath)
    if os.path.isfile(candidate):
        return candidate
    raise ConfigError(f"{relpath}: config file not found (neither as a path nor in objcrop's eval_configs/)")


def merge_config(defaults: Callable[[], CfgNode], config_file: Optional[str], opts: Optional[List[str]]) -> CfgNode:
    """defaults() <- config_file <- opts, frozen. Unknown keys raise ConfigError naming the key and source."""
    cfg = defaults()
    if config_file:
        path = packaged_config(config_file)
        try:
            cfg.merge_from_file(path)
        except KeyError as e:
            raise ConfigError(f"{path}: {_key_message(e)}") from e
        except (ValueError, AssertionError, TypeError) as e:
            raise ConfigError(f"{path}: {e}") from e
    if opts:
        if len(opts) % 2:
            raise ConfigError(f"--opts takes KEY VALUE pairs; got an odd number of items: {opts}")
        try:
            cfg.merge_from_list(list(opts))
        except KeyError as e:
            raise ConfigError(f"--opts: {_key_message(e)}") from e
        except (ValueError, AssertionError, TypeError) as e:
            raise ConfigError(f"--opts: {e}") from e
    cfg.freeze()
    return cfg


def _key_message(e: KeyError) -> str:
    msg = e.args[0] if e.args else str(e)
    return str(msg) if "key" in str(msg).lower() else f"Non-existent config key: {msg}"


def write_config(cfg: CfgNode, out_dir: str, name: str = "config.yaml") -> str:
    path = os.path.join(out_dir, name)
    write_text_atomic(path, cfg.dump())
    return path


def config_hash(cfg: CfgNode, ignore: Iterable[str] = ()) -> str:
    """Short stable hash of the merged config (its YAML dump is key-sorted). `ignore` leaves out
    dotted keys ("DATA.NUM_WORKERS"); without it the hash is the one every record has carried."""
    text, ignore = cfg.dump(), set(ignore)
    if ignore:
        text = yaml.safe_dump({k: v for k, v in flat_config(text).items() if k not in ignore}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def flat_config(dump: str) -> Dict[str, object]:
    """A config's YAML dump as {dotted key: value}, leaves only."""
    flat: Dict[str, object] = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(yaml.safe_load(dump) or {}, "")
    return flat


def config_changes(old_dump: str, new_dump: str) -> Dict[str, Tuple[object, object]]:
    """{dotted key: (old value, new value)} for every key whose value differs between two config
    dumps; a key only one of them has reads as None on the other side."""
    old, new = flat_config(old_dump), flat_config(new_dump)
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
