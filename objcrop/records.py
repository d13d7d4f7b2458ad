"""The run record every stage writes and the report reads: one format, one place.

* `Provenance` — which pretraining a result belongs to (method, view policy, proposal source,
  epochs, architecture, data, seed, and a free run `tag`). Every stage carries it under the
  `"pretrain"` key of its results.json; checkpoints and converted `.pkl` files carry it too.
* `parse_provenance_overrides` — the `--pretrain KEY=VALUE` words of `objcrop convert` and `objcrop probe`:
  a Provenance's fields set by hand for a file that carries none.
* `run_name(...)` — the one name of a pretraining run, encoding method, policy, proposals,
  arch, batch, epochs, data and seed (and the tag).
* `dataset_tag` / `dataset_label` — the file-name tag and the short table label of a dataset
  name or spec (`synth:/abs/dir:test`).
* `results(...)`, `validate_results`, `write_results`, `read_results` — the versioned
  results.json schema (docs/INTERFACES.md). Every record says which code wrote it
  (`code_identity`: objcrop's version, and in a git checkout its commit and whether tracked
  files differed from it). Records written before the schema had a version
  (`"schema"` absent) are read as version 0: their tag may still be glued to the policy
  (`random-no-colour`), which `Provenance.from_dict` keeps as it is, so old and new records
  give the same row label.

This module imports nothing from the stages: they all import it (docs/ARCHITECTURE.md).
"""
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional

from objcrop.errors import ConfigError, ObjcropError

SCHEMA_VERSION = 1
STAGES = ("pretrain", "probe", "detection")
STATUSES = ("ok", "failed")
REFERENCE_METHODS = ("random_init", "supervised")
# The ResNet stems a backbone may have (PRETRAIN.STEM; objcrop.pretrain.models builds them): torchvision's
# ImageNet stem, the default, and the CIFAR stem of small-image SSL. The first is the default.
RESNET_STEMS = ("imagenet", "cifar")
# The dataset spec kinds of objcrop.datasets (kind:PATH[:SPLIT...]).
SPEC_KINDS = ("coco", "voc", "openimages", "folder", "synth")
# Fields a results.json must hold, by stage, beside stage/status/pretrain (ok runs only).
REQUIRED_FIELDS: Dict[str, tuple] = {
    "pretrain": ("iterations",),
    "probe": ("dataset", "mAP"),
    "detection": ("task", "dataset", "box"),
}


def check_stem(stem: str, key: str = "PRETRAIN.STEM") -> str:
    """`stem` if it is one of RESNET_STEMS, else a ConfigError naming `key` and the choices
    (checked where a run is named as well as where the model is built, so a misspelt stem names no run)."""
    if stem not in RESNET_STEMS:
        raise ConfigError(f"{key}: unknown stem {stem!r}; choose one of {list(RESNET_STEMS)}")
    return stem


class RecordError(ObjcropError):
    """A results.json (or provenance block) that does not follow docs/INTERFACES.md."""


@dataclass(frozen=True)
class Provenance:
    """Which pretraining produced a backbone: the `"pretrain"` block of every record."""

    method: str = "unknown"
    policy: str = "unknown"
    proposals: str = "unknown"
    epochs: Optional[int] = None
    arch: str = "unknown"
    dataset: str = "unknown"
    seed: Optional[int] = None
    tag: str = ""
    stem: str = RESNET_STEMS[0]

    @classmethod
    def random_init(cls, arch: str, seed: int) -> "Provenance":
        return cls("random_init", "none", "none", 0, arch, "none", seed)

    @classmethod
    def supervised(cls, arch: str, dataset: str, seed: Optional[int], epochs: Optional[int] = 0) -> "Provenance":
        return cls("supervised", "none", "none", epochs, arch, dataset, seed)

    @classmethod
    def from_dict(cls, block: Any) -> "Provenance":
        """A provenance from a stored block; missing fields stay 'unknown', unknown fields are dropped."""
        if not isinstance(block, Mapping):
            return cls()
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in block.items() if k in known and v is not None}
        for key in ("epochs", "seed"):
            if key in values:
                values[key] = _int_or_none(values[key])
        for key in ("method", "policy", "proposals", "arch", "dataset", "tag", "stem"):
            if key in values:
                values[key] = str(values[key])
        return cls(**values)

    def replace(self, **changes) -> "Provenance":
        return Provenance.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> Dict[str, Any]:
        """The stored block. `tag` is written only when set and `stem` only when not the default, so
        untagged ImageNet-stem records keep their old shape."""
        block = asdict(self)
        if not block["tag"]:
            del block["tag"]
        if block["stem"] == RESNET_STEMS[0]:
            del block["stem"]
        return block

    @property
    def arch_label(self) -> str:
        """The architecture as names and report rows show it: a non-default stem joins it
        (`resnet18-cifarstem`), so a CIFAR-stem run never shares a name or a row with an ImageNet-stem one."""
        return self.arch if self.stem == RESNET_STEMS[0] else f"{self.arch}-{self.stem}stem"

    @property
    def policy_label(self) -> str:
        """The policy as report rows name it: the tag joins the policy (`random-no-colour`)."""
        return f"{self.policy}-{self.tag}" if self.tag else self.policy

    @property
    def is_reference(self) -> bool:
        return self.method in REFERENCE_METHODS


PROVENANCE_FIELDS = tuple(f.name for f in fields(Provenance))


def parse_provenance_overrides(items: List[str], flag: str = "--pretrain") -> Dict[str, object]:
    """{field: value} of `flag KEY=VALUE` words (`objcrop convert` and `objcrop probe`): the fields of a
    Provenance set by hand for a file that carries none (a torchvision state dict). A key that is not a field
    is a ConfigError: Provenance.from_dict would drop it without a word."""
    out: Dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        if key not in PROVENANCE_FIELDS:
            raise ConfigError(f"{flag} {item!r}: {key!r} is not a pretrain field; use one of "
                              f"{', '.join(PROVENANCE_FIELDS)}")
        out[key] = int(value) if value.lstrip("-").isdigit() else value
    return out


def _int_or_none(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------- names


def split_dataset_spec(name: str):
    """(kind, parts) of a dataset spec `kind:A[:B...]`, or (None, [name]) for a plain name."""
    parts = str(name).split(":")
    if len(parts) > 1 and parts[0] in SPEC_KINDS:
        return parts[0], parts[1:]
    return None, [str(name)]


def dataset_tag(spec: str) -> str:
    """A file-name-safe tag of a dataset name or spec: 'synth:/data/synth_small:train' -> 'synth_small-train'."""
    _, parts = split_dataset_spec(spec)
    parts = [os.path.basename(p.rstrip("/")) or p for p in parts]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(p for p in parts if p)) or "data"


def dataset_label(name: Any) -> str:
    """A short table label of a dataset name or spec (`synth:/abs/dir:test` -> `synth:test`)."""
    if not name:
        return ""
    kind, parts = split_dataset_spec(str(name))
    if kind == "coco" and len(parts) >= 2:
        return f"coco:{os.path.splitext(os.path.basename(parts[0]))[0]}"
    if kind == "openimages" and len(parts) >= 3:  # DIR:SPLIT:LIST — the subset list names the data
        return f"openimages:{parts[1]}:{os.path.splitext(os.path.basename(parts[2]))[0]}"
    if kind in ("synth", "voc", "openimages") and len(parts) >= 2:
        return f"{kind}:{parts[-1]}"
    if kind == "folder":
        return f"folder:{os.path.basename(parts[0].rstrip('/'))}"
    return str(name)


def arch_tag(arch: str) -> str:
    return str(arch).replace("resnet", "r")


def run_name(prov: Provenance, batch_size: Optional[int] = None) -> str:
    """The directory name of a pretraining run: method, policy (with tag), proposals, arch (with a
    non-default stem: `r18-cifarstem`), batch, epochs, data and seed:
    `moco_v2_obj-obj-dilate_gt_r18_b256_e100_study-train_s0`."""
    parts = [prov.method, prov.policy_label, prov.proposals, arch_tag(prov.arch_label)]
    if batch_size is not None:
        parts.append(f"b{int(batch_size)}")
    parts += [f"e{prov.epochs}", dataset_tag(prov.dataset), f"s{prov.seed}"]
    return "_".join(str(p) for p in parts)


# ----------------------------------------------------------------------------- results.json


def cpuinfo_field(name: str) -> Optional[str]:
    """The value of the first `name` line of Linux's /proc/cpuinfo ("model name", "flags"), or None
    where there is no such file or line (the machine a run or a benchmark records)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.split(":", 1)[0].strip() == name), None)
    except OSError:
        return None


def cpu_model() -> str:
    """This machine's CPU model, as results.json and benchmarks/results.md name it."""
    import platform

    return cpuinfo_field("model name") or platform.processor() or "unknown CPU"


# the widest vector extension a CPU offers, widest first: oneDNN and MKL pick their float kernels by it,
# so two CPUs of one model name ("AMD EPYC") that differ here train the same seed to other weights
_VECTOR_ISAS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512"), ("avx2", "AVX2"))


def cpu_vector_isa() -> str:
    """The widest of `_VECTOR_ISAS` that Linux's /proc/cpuinfo flags name; "" where none (or elsewhere)."""
    flags = set((cpuinfo_field("flags") or "").split())
    return next((name for flag, name in _VECTOR_ISAS if flag in flags), "")


def cpu_kind() -> str:
    """This machine's CPU as a run's device names it: its model and its widest vector extension, which
    decides its float kernels ("AMD EPYC (AVX512-BF16)")."""
    isa = cpu_vector_isa()
    return f"{cpu_model()} ({isa})" if isa else cpu_model()


def code_identity(package: Optional[str] = None) -> Dict[str, Any]:
    """The code this process runs: {"objcrop": version, "commit": the git commit or None, "dirty": whether
    tracked files differ from it, or None}. The commit is read only where objcrop's own files are the
    checkout's (an editable install): a copy installed into a virtual environment that happens to lie
    inside some git repository must not take that repository's commit. Never raises."""
    import objcrop

    identity: Dict[str, Any] = {"objcrop": objcrop.__version__, "commit": None, "dirty": None}
    package = package or os.path.dirname(os.path.abspath(objcrop.__file__))  # (another folder: tests)
    git = shutil.which("git")
    if git is None:
        return identity

    def ask(*args: str) -> Optional[str]:
        try:
            done = subprocess.run([git, "-C", package, *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = ask("rev-parse", "--show-toplevel")
    checkout_package = os.path.join(top, "objcrop") if top else ""
    if not os.path.isdir(checkout_package) or not os.path.samefile(checkout_package, package):
        return identity
    identity["commit"] = ask("rev-parse", "HEAD")
    status = ask("status", "--porcelain", "--untracked-files=no")
    identity["dirty"] = None if status is None else bool(status)
    return identity


def code_history(earlier: Optional[List[Dict[str, Any]]], now: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The code identities a run was trained by, session after session: `now` appended unless the
    last session ran the same code (a run resumed across commits lists each)."""
    history = [dict(c) for c in (earlier or [])]
    return history if history and history[-1] == now else history + [dict(now)]


def results(stage: str, status: str, provenance: Provenance, **fields_) -> Dict[str, Any]:
    """A results.json dict of the current schema; raises RecordError when it would not validate.
    `code` is the writing process's code_identity() unless the caller gives it (then git is not asked)."""
    if "code" not in fields_:  # not setdefault: its argument would run git even when the caller gave one
        fields_["code"] = code_identity()
    record = {"schema": SCHEMA_VERSION, "stage": stage, "status": status, "pretrain": provenance.to_dict(), **fields_}
    validate_results(record, where=f"{stage} results")
    return record


def validate_results(record: Any, where: str = "results.json") -> int:
    """Check a results.json dict against its schema; returns its version (0: written before versions)."""
    if not isinstance(record, Mapping):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    version = record.get("schema", 0)
    if not isinstance(version, int) or version < 0 or version > SCHEMA_VERSION:
        raise RecordError(f"{where}: schema version {version!r} is not one this objcrop reads (0..{SCHEMA_VERSION})")
    stage = record.get("stage")
    if stage not in STAGES:
        raise RecordError(f"{where}: 'stage' is {stage!r}, expected one of {', '.join(STAGES)}")
    status = record.get("status", "ok")
    if status not in STATUSES:
        raise RecordError(f"{where}: 'status' is {status!r}, expected one of {', '.join(STATUSES)}")
    if version >= 1:
        block = record.get("pretrain")
        if not isinstance(block, Mapping) or not block.get("method"):
            raise RecordError(f"{where}: 'pretrain' must be a provenance block with at least 'method'")
        if status == "ok":
            missing = [k for k in REQUIRED_FIELDS[stage] if k not in record]
            if missing:
                raise RecordError(f"{where}: a {stage} record with status ok lacks {', '.join(missing)}")
    return version


def write_results(run_dir: str, record: Dict[str, Any]) -> str:
    """Validate and write RUN/results.json atomically; returns its path."""
    from objcrop.io import write_json_atomic

    path = os.path.join(run_dir, "results.json")
    validate_results(record, where=path)
    write_json_atomic(path, record)
    return path


def read_results(path: str) -> Dict[str, Any]:
    """A results.json, checked: a malformed one raises RecordError naming the file."""
    from objcrop.io import read_json

    record = read_json(path)
    validate_results(record, where=path)
    return record


def provenance_of(record: Mapping) -> Provenance:
    return Provenance.from_dict(record.get("pretrain"))
