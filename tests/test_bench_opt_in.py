"""benchmarks/run_all.py: a long benchmark (OPT_IN) runs only when asked for, so `make bench` stays short."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ALL = os.path.join(REPO, "benchmarks", "run_all.py")
BENCH = '''import argparse
p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--quick", action="store_true")
open(p.parse_args().out, "w").write("ran %s\\n")
'''


def _run(tmp_path, *args):
    r = subprocess.run([sys.executable, RUN_ALL, "--bench-dir", str(tmp_path), "--quick"] + list(args),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return (tmp_path / "results.md").read_text()


def test_the_long_benchmark_runs_only_when_asked_for(tmp_path):
    for name in ("short", "tta"):
        (tmp_path / f"bench_{name}.py").write_text(BENCH % name)
    default = _run(tmp_path)
    assert "ran short" in default and "ran tta" not in default
    asked = _run(tmp_path, "--with", "tta")
    assert "ran short" in asked and "ran tta" in asked
