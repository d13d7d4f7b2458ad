"""Fault injection: a disk that fills up while objcrop writes a results.json or a proposal store.

Each case runs the real writer in a child process whose file-size limit (RLIMIT_FSIZE, SIGXFSZ
ignored, so that a write past it fails with EFBIG as on a full disk) is below the file's size.
The outcome must be one clear error line naming the file (exit 2 through the CLI's handler), the
previous file under the final name untouched, and no temporary file left beside it.
The rows of docs/reliability.md come from these cases.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from objcrop.records import Provenance, read_results, results, write_results

LIMIT = 4096  # bytes: above the previous files' sizes, below the new ones'

CHILD = textwrap.dedent("""
    import resource, signal, sys
    from objcrop.cli import run_stage_main
    limit = int(sys.argv[2])
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    def write_results_json(target):
        from objcrop.records import Provenance, results, write_results
        record = results("pretrain", "failed", Provenance(method="moco_v2"), error="diverged " * 2000)
        write_results(target, record)

    def write_store(target):
        import numpy as np
        from objcrop.pretrain.proposals.store import ProposalStore
        rng = np.random.default_rng(1)
        items = {f"img{k}": (rng.random((10, 4)) * 50, rng.random(10)) for k in range(200)}
        ProposalStore.write(target, items, {"method": "random"})

    writer = {"results": write_results_json, "store": write_store}[sys.argv[1]]
    sys.exit(run_stage_main(lambda argv: writer(argv[0]), [sys.argv[3]], "objcrop fault-test"))
""")


def _child(kind: str, target: str, limit: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", CHILD, kind, str(limit), target], capture_output=True, text=True,
                          env=env, timeout=120)


def _leftovers(directory) -> list:
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def test_results_json_on_a_full_disk_fails_clearly_and_keeps_the_previous_file(tmp_path):
    run = tmp_path / "run"
    previous = write_results(str(run), results("pretrain", "failed", Provenance(method="moco_v2"), error="first"))
    before = open(previous, "rb").read()
    assert len(before) < LIMIT
    done = _child("results", str(run), LIMIT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"objcrop fault-test: error: {previous}: not written: File too large")
    assert open(previous, "rb").read() == before and read_results(previous)["error"] == "first"
    assert _leftovers(run) == []
    # The control: without the limit the same child writes the file.
    assert _child("results", str(run), 0).returncode == 0
    assert len(read_results(previous)["error"]) > LIMIT


def test_proposal_store_on_a_full_disk_fails_clearly_and_keeps_the_previous_store(tmp_path):
    from objcrop.pretrain.proposals.store import ProposalStore

    path = str(tmp_path / "proposals.store")
    ProposalStore.write(path, {"a": (np.array([[1, 2, 30, 40]]), np.array([0.5]))}, {"method": "random"})
    before = open(path, "rb").read()
    assert len(before) < LIMIT
    done = _child("store", path, LIMIT)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"objcrop fault-test: error: {path}: not written: File too large")
    assert open(path, "rb").read() == before
    store = ProposalStore.open(path)
    assert len(store) == 1
    assert _leftovers(tmp_path) == []
    assert _child("store", path, 0).returncode == 0 and len(ProposalStore.open(path)) == 200


def test_write_error_is_an_oserror_with_errno(tmp_path):
    """Callers that handle OSError keep working: AtomicWriteError is one, with the original errno."""
    import errno

    from objcrop.io import AtomicWriteError, _raise_if_no_space

    with pytest.raises(OSError) as err:
        _raise_if_no_space(OSError(errno.ENOSPC, "No space left on device"), str(tmp_path / "x.json"))
    assert isinstance(err.value, AtomicWriteError) and err.value.errno == errno.ENOSPC
    assert str(err.value).startswith(f"{tmp_path / 'x.json'}: not written: No space left on device")
    json.dumps(str(err.value))  # one printable line


def test_every_test_docs_reliability_names_exists():
    """docs/reliability.md's rows are checked by tests: each one it names must exist."""
    import ast
    import re

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    text = open(os.path.join(root, "docs", "reliability.md"), encoding="utf-8").read()
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text)
    assert len(named) >= 10
    for path, name in named:
        tree = ast.parse(open(os.path.join(root, path), encoding="utf-8").read())
        assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, f"{path}::{name}"
