"""Command-line flags as shortcuts for config keys (the probe's and the proposals' CLIs).

A stage's settings live in a defaults CfgNode (detectron2's idiom); `--config-file` and `--opts`
override it. The familiar flags (`--epochs 5`) stay, each naming one key (`LINEAR.EPOCHS`): a flag
given on the command line becomes `KEY VALUE` placed *before* `--opts`, so the precedence is

    defaults  <  --config-file YAML  <  flags  <  --opts KEY VALUE

and a flag left out changes nothing (its argparse default is None, never the key's default).
Imports no torch: the proposals' CLI uses it and its workers fork cheaply.
"""
import argparse
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from objcrop.config import CfgNode

PRECEDENCE = ("precedence: defaults < --config-file < flags < --opts; a flag names the config key it sets "
              "[KEY, default]; the merged config is written with the outputs and can be passed back "
              "as --config-file to repeat the run")


@dataclass(frozen=True)
class Flag:
    """`--flag` sets config `key`; kwargs go to argparse (type, nargs, choices, metavar, action)."""

    flag: str
    key: str
    help: str
    kwargs: Optional[Dict[str, Any]] = None


def cfg_get(cfg: CfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def add_flags(parser, flags: Sequence[Flag], defaults: CfgNode) -> None:
    """Add each flag to `parser` (or an argument group); its help names its key and the key's default."""
    for f in flags:
        kwargs = dict(f.kwargs or {})
        default = cfg_get(defaults, f.key)
        if kwargs.get("action") == "store_true":
            kwargs["default"] = None  # only an explicit flag sets the key
        else:
            kwargs.setdefault("default", None)
            if "choices" not in kwargs:
                kwargs.setdefault("metavar", f.flag.lstrip("-").replace("-", "_").upper())
        shown = "''" if default == "" else ("none" if default is None else default)
        parser.add_argument(f.flag, dest=_dest(f), help=f"{f.help} [{f.key}, default {shown}]", **kwargs)


def flag_opts(args: argparse.Namespace, flags: Sequence[Flag]) -> List[Any]:
    """`[KEY, VALUE, ...]` for every flag given on the command line, in table order."""
    out: List[Any] = []
    for f in flags:
        value = getattr(args, _dest(f), None)
        if isinstance(value, str):
            value = repr(value)  # merge_from_list literal-evaluates strings: "None" or "1" must stay text
        if value is not None:
            out += [f.key, list(value) if isinstance(value, tuple) else value]
    return out


def add_config_args(parser, file_example: str, opts_example: str) -> None:
    """`--config-file` and `--opts`, as every objcrop stage spells them."""
    parser.add_argument("--config-file", default="", metavar="FILE",
                        help="YAML that overrides the defaults: a path, or a name under eval_configs/ "
                             f"(e.g. {file_example}); a config.yaml written by a run repeats that run")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="override config keys, after the file and the flags; must come last, "
                             f"e.g. --opts {opts_example}")


def _dest(f: Flag) -> str:
    return "flag_" + f.flag.lstrip("-").replace("-", "_")
