"""Is a derived output still of the checkpoint it was made from?

A task is skipped when its outputs are there. For what is made from a checkpoint that is not enough: a
backbone trained again (its run folder removed and rerun, the bound trained again with another seed or
on another CPU) leaves its old probe, converted .pkl and fine-tunings in place, and a pipeline that only
asked "is the file there?" would report the old weights as the new ones. Each names the checkpoint it
comes from: a probe's results.json by `weights_id` (the first 16 hex digits of its sha256), `objcrop
convert` the .pkl by `__objcrop_source__`, a fine-tuning's results.json by `source_sha256` (an older one
only the .pkl's own hash, `weights_sha256`, which leads to the same place through the .pkl). Where a side
cannot tell (a checkpoint not kept, a file from before these fields), the output counts as fresh.

Hashes are cached by (path, size, mtime): the plan asks every task, and again before starting each.
"""
import functools
import json
import os
import re
from typing import Optional

from objcrop.errors import ObjcropError
from objcrop.io import sha256_file


@functools.lru_cache(maxsize=512)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


@functools.lru_cache(maxsize=512)
def _pkl_source_sha256(path: str, size: int, mtime_ns: int) -> Optional[str]:
    from objcrop.convert.writer import pkl_source_sha256  # torch and numpy: only when a .pkl is asked
    return pkl_source_sha256(path)


def file_sha256(path: str) -> str:
    st = os.stat(path)
    return _sha256(os.path.abspath(path), st.st_size, st.st_mtime_ns)


def pkl_source_sha256(pkl: str) -> Optional[str]:
    """The sha256 of the checkpoint a .pkl was converted from (None: not written by `objcrop convert`)."""
    st = os.stat(pkl)
    return _pkl_source_sha256(os.path.abspath(pkl), st.st_size, st.st_mtime_ns)


def conversion_outdated(pkl: str, checkpoint: str) -> Optional[str]:
    """Why the .pkl is no longer a conversion of `checkpoint` as it is now (None: it is, or cannot tell)."""
    if not (os.path.isfile(pkl) and os.path.isfile(checkpoint)):
        return None
    try:
        source = pkl_source_sha256(pkl)
    except ObjcropError as e:  # cut short by a kill before atomic writes, or damaged since: convert it again
        return str(e)
    if source is None or source == file_sha256(checkpoint):
        return None
    return (f"{pkl} was converted from another training of {checkpoint} (sha256 {source[:12]}…, "
            f"the checkpoint now {file_sha256(checkpoint)[:12]}…)")


def probe_outdated(results_json: str, weights: str) -> Optional[str]:
    """Why a finished probe (its results.json) is not one of `weights` as they are now (None: it is, or
    cannot tell: a random init, a file not kept)."""
    result = _read_result(results_json)
    weights_id = result.get("weights_id") if result else None
    if not (isinstance(weights_id, str) and re.fullmatch(r"[0-9a-f]{16}", weights_id) and os.path.isfile(weights)):
        return None
    if file_sha256(weights).startswith(weights_id):
        return None
    return (f"{results_json} is a probe of another training of {weights} (sha256 {weights_id}…, "
            f"the checkpoint now {file_sha256(weights)[:16]}…)")


def fine_tuning_outdated(results_json: str, pkl: str, checkpoint: str) -> Optional[str]:
    """Why a finished fine-tuning (its results.json) is not one of `checkpoint` as it is now (None: it is,
    or cannot tell). Its source is its `source_sha256`, else — an older results.json — the source of the
    .pkl it names by `weights_sha256` where that .pkl is still the same file."""
    result = _read_result(results_json)
    if not result or not os.path.isfile(checkpoint):
        return None
    source = result.get("source_sha256")
    if source is None and os.path.isfile(pkl) and result.get("weights_sha256") == file_sha256(pkl):
        source = pkl_source_sha256(pkl)  # the .pkl the run read, so it reads (the hash matched)
    if source is None or source == file_sha256(checkpoint):
        return None
    return (f"{results_json} is a fine-tuning of another training of {checkpoint} (sha256 {source[:12]}…, "
            f"the checkpoint now {file_sha256(checkpoint)[:12]}…)")


def _read_result(results_json: str) -> Optional[dict]:
    try:
        with open(results_json, "r", encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None
