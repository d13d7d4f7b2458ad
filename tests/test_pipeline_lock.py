"""One pipeline per output folder (objcrop.pipeline.lock) and the removal of killed writers'
temporary files (objcrop.io.remove_stale_temp_files): a live holder refuses the real CLI, a stale
or half-written lock is taken over with one warning, the lock goes at exit and on SIGTERM."""
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from objcrop.io import _host_label, atomic_path, process_alive, remove_stale_temp_files
from objcrop.pipeline.lock import LOCK_NAME, PipelineLock, PipelineLocked, held

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# a lock holder in its own process: holds OUT's lock, says so, and sleeps until signalled
HOLDER = textwrap.dedent("""
    import signal, sys, time
    # Ctrl-C as in a terminal: a child of a pytest-xdist worker inherits SIGINT ignored, and Python
    # then installs no KeyboardInterrupt handler, so the holder would sleep through the signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from objcrop.pipeline.lock import held
    with held(sys.argv[1], "objcrop pipeline --out " + sys.argv[1] + " --preset holder"):
        print("held", flush=True)
        time.sleep(120)
""")


def _start_holder(out):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _pipeline(out, tmp_path):
    """The real `objcrop pipeline` on a preset of one quick task (4 synthetic images)."""
    preset = tmp_path / "quick.yaml"
    preset.write_text("data:\n  dir: '{out}/data'\n  synth: {num_images: 4, seed: 0, args: [--no-progress]}\n"
                      "datasets: {pretrain: 'synth:{data}:train', probe_train: x, probe_test: y}\n"
                      "pretrain: {policies: [random], seeds: [0]}\n")
    return subprocess.run([sys.executable, "-m", "objcrop.pipeline", "--preset", str(preset), "--out", str(out),
                           "--stages", "data"], capture_output=True, text=True, cwd=REPO, timeout=300)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not process_alive(proc.pid)
    return proc.pid


def test_a_live_holder_refuses_a_second_pipeline_naming_it_and_sigterm_releases(tmp_path):
    out = tmp_path / "out"
    holder = _start_holder(out)
    try:
        r = _pipeline(out, tmp_path)
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"objcrop pipeline: error: {out} is in use by another pipeline")
        for part in (f"pid {holder.pid}", f"on {socket.gethostname()}", "since 20", "--preset holder", LOCK_NAME):
            assert part in lines[0], part
        assert not (out / "data").exists()  # nothing ran
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid  # the holder's lock untouched
    finally:
        holder.send_signal(signal.SIGTERM)
        holder.wait(timeout=30)
    assert not (out / LOCK_NAME).exists()  # released on SIGTERM


def test_a_killed_pipelines_lock_and_temporary_files_are_taken_over_and_removed(tmp_path):
    out = tmp_path / "out"
    holder = _start_holder(out)
    holder.kill()  # kill -9: the lock stays behind
    holder.wait()
    assert (out / LOCK_NAME).exists()
    (out / "runs" / "r").mkdir(parents=True)
    host = _host_label()
    dead_tmp = out / "runs" / "r" / f".results.json.{holder.pid}@{host}.abc123.tmp"
    live_tmp = out / "runs" / "r" / f".results.json.{os.getpid()}@{host}.abc123.tmp"  # this process: alive
    other_host_tmp = out / "runs" / "r" / f".results.json.{holder.pid}@not-{host}.abc123.tmp"
    foreign_tmp = out / "runs" / "r" / ".results.json.abc123.tmp"  # an older naming: its writer is unknown
    for path in (dead_tmp, live_tmp, other_host_tmp, foreign_tmp):
        path.write_text("{half")
    dead_dir = out / f".data.{holder.pid}@{host}.xyz_9.tmp"  # a dataset folder being generated (synth)
    (dead_dir / "images").mkdir(parents=True)
    (dead_dir / "images" / "000000.jpg").write_bytes(b"\xff\xd8")

    r = _pipeline(out, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    warnings = [line for line in r.stdout.splitlines() if "stale lock" in line]
    assert len(warnings) == 1 and f"pid {holder.pid} on {socket.gethostname()}" in warnings[0]
    assert "has ended" in warnings[0] and "warning:" in warnings[0]
    assert "removed 2 temporary file(s) or folder(s) left by killed writers, e.g. " in r.stdout
    assert not dead_tmp.exists() and not dead_dir.exists()
    assert live_tmp.exists() and other_host_tmp.exists() and foreign_tmp.exists()
    assert (out / "data" / "meta.json").exists()  # the run went on
    assert not (out / LOCK_NAME).exists()  # and released its lock at the end


def test_half_written_or_foreign_lock_files_are_stale(tmp_path):
    for content in (b"", b'{"pid": 12', b"\xff\xfe garbage", b'{"host": "x"}'):
        (tmp_path / LOCK_NAME).write_bytes(content)
        lock = PipelineLock(str(tmp_path), "objcrop pipeline").acquire()
        assert "not a whole lock" in lock.stale
        assert json.loads((tmp_path / LOCK_NAME).read_text())["token"] == lock.holder["token"]
        lock.release()
        assert not (tmp_path / LOCK_NAME).exists()


def test_a_reused_pid_is_stale_another_hosts_lock_refuses(tmp_path):
    lock = PipelineLock(str(tmp_path), "objcrop pipeline").acquire()
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["pid_start"] is not None
    with pytest.raises(PipelineLocked, match=f"pid {os.getpid()} on"):  # a live holder, even this very process
        PipelineLock(str(tmp_path), "objcrop pipeline").acquire()
    # the same pid, started at another time: the holder ended and its pid went to another process
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(holder, pid_start=holder["pid_start"] - 1, token="old")))
    assert "now belongs to another process" in PipelineLock(str(tmp_path), "x").acquire().stale
    # a dead pid of another host might be alive there: refused
    (tmp_path / LOCK_NAME).write_text(json.dumps(dict(holder, pid=_dead_pid(), host="elsewhere", token="old")))
    with pytest.raises(PipelineLocked, match="on elsewhere"):
        PipelineLock(str(tmp_path), "x").acquire()
    lock.release()  # not ours any more: left alone
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "elsewhere"


def test_released_on_return_on_exception_and_on_ctrl_c(tmp_path):
    with held(str(tmp_path), "objcrop pipeline"):
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(ValueError):
        with held(str(tmp_path), "objcrop pipeline"):
            raise ValueError("a stage's bug")
    assert not (tmp_path / LOCK_NAME).exists()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back
    holder = _start_holder(tmp_path)
    holder.send_signal(signal.SIGINT)  # Ctrl-C
    assert holder.wait(timeout=30) != 0 and not (tmp_path / LOCK_NAME).exists()


def _try_to_take(out, results):
    try:
        lock = PipelineLock(out, "racer").acquire()
        results.put(("won", os.getpid()))
        time.sleep(1.0)  # hold it while the others try
        lock.release()
    except PipelineLocked as e:
        results.put(("refused", str(e)))


def test_racing_takers_of_a_stale_lock_one_wins(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "since": 0}))
    results = multiprocessing.get_context("fork").Queue()
    racers = [multiprocessing.get_context("fork").Process(target=_try_to_take, args=(str(tmp_path), results))
              for _ in range(4)]
    for p in racers:
        p.start()
    outcomes = [results.get(timeout=60) for _ in racers]
    for p in racers:
        p.join(timeout=30)
    assert sorted(kind for kind, _ in outcomes) == ["refused"] * 3 + ["won"]
    winner = next(pid for kind, pid in outcomes if kind == "won")
    assert all(f"pid {winner} on" in why for kind, why in outcomes if kind == "refused")


def test_a_writer_killed_mid_write_leaves_only_its_own_named_temporary_file(tmp_path):
    """atomic_path's temporary file names its writer; once that writer is dead it is removed, never before."""
    child = textwrap.dedent("""
        import os, signal, sys
        from objcrop.io import atomic_path
        with atomic_path(sys.argv[1]) as tmp:
            open(tmp, "w").write('{"half')
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    target = tmp_path / "results.json"
    proc = subprocess.Popen([sys.executable, "-c", child, str(target)], cwd=REPO)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not target.exists()  # nothing under the final name
    left = os.listdir(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".results.json.{proc.pid}@{_host_label()}.")
    assert left[0].endswith(".tmp")
    with atomic_path(str(tmp_path / "live.json")) as mine:  # a live writer's file, mid-write, survives a cleaning
        open(mine, "w").write("{")
        assert remove_stale_temp_files(str(tmp_path)) == [str(tmp_path / left[0])]
        assert os.path.exists(mine)
    assert sorted(os.listdir(tmp_path)) == ["live.json"]
