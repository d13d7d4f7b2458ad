"""Atomic file writing and checked reading.

Every file objcrop produces appears whole or not at all: it is written to a
temporary file in the same directory and moved into place with os.replace,
which is atomic on POSIX file systems. The temporary file names its writer
(`.NAME.<pid>@<host>.XXXXXXXX.tmp`), so that the leftovers of a writer killed
mid-write (kill -9) can be told from a live writer's files and removed
(remove_stale_temp_files, which the pipeline runs on its output folder).

Pickles (detectron2 .pkl files, object .npy files) are read with a restricted
unpickler that builds data and never runs code (read_pickle_restricted).
"""
import _compat_pickle
import builtins
import collections
import contextlib
import errno
import hashlib
import importlib
import json
import os
import pickle
import re
import shutil
import socket
import tempfile
from typing import Any, BinaryIO, Iterator, List, Optional

from objcrop.errors import ObjcropError


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path; on success it replaces `path` atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=directory)
    except OSError as e:
        _raise_if_no_space(e, path)
        raise
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except OSError as e:
        _raise_if_no_space(e, path)
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# `.NAME.<pid>@<host>.XXXXXXXX.tmp` (mkstemp's random part has no dot)
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[A-Za-z0-9_]+\.tmp$")


def temp_prefix(path: str) -> str:
    """mkstemp/mkdtemp's prefix (with suffix ".tmp") for a temporary file or folder that becomes `path`:
    it names the writer, so that remove_stale_temp_files can tell a killed writer's leftover."""
    return f".{os.path.basename(path)}.{os.getpid()}@{_host_label()}."


def _host_label() -> str:
    """This machine's short host name, reduced to characters a file name and _TEMP_NAME keep."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0]) or "host"


def process_alive(pid: int) -> bool:
    """Is a process with this pid running on this machine? (A zombie has ended: it counts as gone.)"""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    fields = proc_stat_fields(pid)
    return fields is None or fields[0] != b"Z"  # no /proc (macOS): os.kill said it exists


def proc_stat_fields(pid: int) -> Optional[List[bytes]]:
    """/proc/PID/stat's fields after the command name (state first, start time at index 19); None
    where there is no such file (the process is gone, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def remove_stale_temp_files(root: str) -> List[str]:
    """Remove, under `root`, the temporary files and folders (temp_prefix) of writers that died mid-write.

    Only those that name a writer on this host whose process is gone are removed: a live writer's
    stay, and so do those from another host (a cluster job: its pid means nothing here) or of
    another naming (written before writers named themselves, or by another program). Returns their paths.
    """
    removed = []
    for directory, folders, files in os.walk(root):
        for name in [n for n in folders if _written_by_a_dead_process(n)]:
            folders.remove(name)  # not walked into
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            removed.append(os.path.join(directory, name))
        for name in (n for n in files if _written_by_a_dead_process(n)):
            with contextlib.suppress(FileNotFoundError):  # another cleaner was first
                os.remove(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
    return removed


def _written_by_a_dead_process(name: str) -> bool:
    match = _TEMP_NAME.match(name)
    return bool(match) and match["host"] == _host_label() and not process_alive(int(match["pid"]))


# A full disk, a quota or a file-size limit (RLIMIT_FSIZE, with SIGXFSZ ignored) while writing.
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class AtomicWriteError(ObjcropError, OSError):
    """A file could not be written for lack of space; nothing was written under its name.

    An OSError too (with the original errno), so code that handles OSError keeps working.
    """


def _raise_if_no_space(e: OSError, path: str) -> None:
    if e.errno in _NO_SPACE:
        error = AtomicWriteError(f"{path}: not written: {e.strerror} (disk full, quota or file-size limit); "
                                 "the file under this name, if any, is the previous one, untouched")
        error.errno = e.errno  # (setting strerror or filename would replace the message in str())
        raise error from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text_atomic(path: str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str) -> Any:
    """Load a json file; a missing or malformed file raises ObjcropError naming it."""
    if not os.path.isfile(path):
        raise ObjcropError(f"{path}: file not found")
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ObjcropError(f"{path}: not valid json ({e.msg} at line {e.lineno}, column {e.colno})") from e


def append_jsonl(path: str, obj: Any) -> None:
    """Append one json line; a crash can only lose the line being written."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, sort_keys=True) + "\n")
        f.flush()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- pickles without code execution
#
# pickle.load runs whatever callable a file names (os.system, subprocess.Popen, ...): a .pkl or an
# object .npy from the internet is a program. The restricted unpickler resolves only the globals
# below, all of which build plain data; anything else is refused before it is imported, so nothing
# of the file runs. Both numpy layouts are listed: numpy 1.x writes numpy.core.*, numpy 2 numpy._core.*.

_NUMPY_RECONSTRUCTORS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
# Containers and numbers that protocols 0-3 spell as a global call (protocol 4+ has opcodes for most).
_BUILTINS = {"complex", "set", "frozenset", "bytearray"}


def _latin1_encode(text, encoding="latin1"):
    """numpy's array bytes in protocol 0-2 pickles are `_codecs.encode(str, "latin1")`; only that use is allowed."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only numpy's 'latin1' is allowed)")
    return text.encode("latin1")


def _numpy_global(module: str, name: str):
    """The numpy function a pickle names, from whichever of numpy.core / numpy._core this numpy has."""
    candidates = [module]
    if module.startswith("numpy.core."):
        candidates.append("numpy._core." + module[len("numpy.core."):])
    elif module.startswith("numpy._core."):
        candidates.append("numpy.core." + module[len("numpy._core."):])
    for candidate in candidates:
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    numpy_version = importlib.import_module("numpy").__version__
    raise pickle.UnpicklingError(f"{module}.{name} is not available in numpy {numpy_version}")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, sets, str, bytes, numbers, numpy arrays, dtypes and scalars; nothing else.

    OrderedDict is allowed too (it is a dict: torch state dicts and some model zoo files use it).
    """

    def find_class(self, module: str, name: str):
        # Python 2 names (Detectron1 / MSRA .pkl files: __builtin__, ...) as pickle's own fix_imports maps them;
        # no Python 3 pickle uses those names, so mapping always is safe.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _NUMPY_RECONSTRUCTORS:
            return _numpy_global(module, name)
        if module == "builtins" and name in _BUILTINS:
            return getattr(builtins, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise DisallowedGlobal(f"{module}.{name}")

    def persistent_load(self, pid):
        raise DisallowedGlobal(f"persistent id {pid!r}")


class DisallowedGlobal(pickle.UnpicklingError):
    """A pickle names a global outside RestrictedUnpickler's list."""


def read_pickle_restricted(path: str, error=ObjcropError, what: str = "pickle"):
    """Load a pickle with RestrictedUnpickler; a missing, damaged or disallowed file raises `error` naming it."""
    try:
        with open(path, "rb") as f:
            return load_pickle_restricted(f, path, error, what)
    except FileNotFoundError as e:
        raise error(f"{path}: file not found") from e


def load_pickle_restricted(f: BinaryIO, path: str, error=ObjcropError, what: str = "pickle"):
    try:
        return RestrictedUnpickler(f, encoding="latin1").load()
    except DisallowedGlobal as e:
        raise error(f"{path}: refused to unpickle: the file names {e}, which a {what} does not need and which "
                    "could run code (objcrop reads pickles with a restricted unpickler: dicts, lists, tuples, "
                    "str/bytes/numbers and numpy arrays only)") from None
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... on damaged files
        raise error(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from e
