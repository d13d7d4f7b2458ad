"""benchmarks/run_all.py (`make bench`): runs each bench_*.py, passes --quick, assembles results.md."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_ALL = os.path.join(REPO, "benchmarks", "run_all.py")

GOOD = '''import argparse
p = argparse.ArgumentParser(); p.add_argument("--out"); p.add_argument("--quick", action="store_true")
a = p.parse_args()
open(a.out, "w").write("# speed\\n\\n| quick | ratio |\\n|---|---|\\n| %s | 1.07 |\\n" % a.quick)
'''
BAD = '''import sys
print("something broke in the benchmark")
sys.exit(3)
'''


def test_runs_every_benchmark_and_reports_failures(tmp_path):
    (tmp_path / "bench_good.py").write_text(GOOD)
    (tmp_path / "bench_bad.py").write_text(BAD)
    (tmp_path / "results.md").write_text("old results\n")
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "speed_h100.md").write_text("Recorded on an H100 by bench_good.py.\n\n# speed\n\n| 2.5 |\n")
    env = dict(os.environ, BENCH_QUICK="1")
    r = subprocess.run([sys.executable, RUN_ALL, "--bench-dir", str(tmp_path)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 1, r.stderr  # one benchmark failed
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("# objcrop performance benchmarks")
    assert "started:" in text and "logical CPUs" in text and "quick" in text
    assert "| True | 1.07 |" in text  # --quick reached the benchmark; its table is included
    assert "## good" in text and "### speed" in text  # its heading demoted under the section
    assert "**FAILED** (exit 3)" in text and "something broke in the benchmark" in text
    assert os.path.isfile(tmp_path / "out" / "good.md") and os.path.isfile(tmp_path / "out" / "bad.log")
    assert r.stdout.strip().endswith("results.md")
    # a GPU record is copied in after the runs, headings demoted, not rerun
    recorded = text[text.index("## Recorded on a GPU machine"):]
    assert "`gpu/speed_h100.md`" in recorded and "Recorded on an H100" in recorded and "### speed" in recorded
    assert "| 2.5 |" in recorded and "| 2.5 |" not in text[:text.index("## Recorded on a GPU machine")]


def test_only_selects_benchmarks(tmp_path):
    (tmp_path / "bench_good.py").write_text(GOOD)
    (tmp_path / "bench_bad.py").write_text(BAD)
    r = subprocess.run([sys.executable, RUN_ALL, "--bench-dir", str(tmp_path), "--only", "good"],
                       capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "BENCH_QUICK"})
    assert r.returncode == 0, r.stdout + r.stderr
    text = (tmp_path / "results.md").read_text()
    assert "| False | 1.07 |" in text and "## bad" not in text


def test_update_reruns_some_and_keeps_the_other_sections(tmp_path):
    """--only NAME --update: the named benchmark's section is rewritten, every other section of the
    earlier results.md is kept word for word, and the header says which is which."""
    other = GOOD.replace("1.07", "2.22")
    (tmp_path / "bench_good.py").write_text(GOOD)
    (tmp_path / "bench_other.py").write_text(other)
    env = {k: v for k, v in os.environ.items() if k != "BENCH_QUICK"}
    run = [sys.executable, RUN_ALL, "--bench-dir", str(tmp_path)]
    assert subprocess.run(run, capture_output=True, text=True, env=env).returncode == 0
    first = (tmp_path / "results.md").read_text()
    kept = first[first.index("## other"):]
    (tmp_path / "bench_good.py").write_text(GOOD.replace("1.07", "3.33"))
    (tmp_path / "bench_other.py").write_text(other.replace("2.22", "9.99"))  # not rerun: must not show
    r = subprocess.run(run + ["--only", "good", "--update"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (tmp_path / "results.md").read_text()
    assert "| False | 3.33 |" in text and "1.07" not in text  # rerun
    assert text.endswith(kept) and "9.99" not in text  # kept word for word, in name order after good
    assert "| other | kept from the earlier run |" in text and "| good | ok |" in text
    assert "this run wrote: good; the other sections are kept from the earlier run:" in text
    assert "  - started:" in text  # the earlier run's header lines, indented under it
    # a second update keeps the whole chain: its own header, the first update's, and the full run's
    r = subprocess.run(run + ["--only", "other", "--update"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (tmp_path / "results.md").read_text()
    assert "- this run wrote: other;" in text and "  - this run wrote: good;" in text
    assert text.count("- started:") == 3 and "    - started:" in text  # the full run's, nested twice
    r = subprocess.run(run + ["--update"], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "--update needs --only" in r.stderr
