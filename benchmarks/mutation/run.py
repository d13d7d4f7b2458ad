"""`make mutation`: mutmut 3 on objcrop's pure core modules, each scored against its fast tests.

Why a staged copy: the repository is installed in development mode with `package_dir` (the stage
folders `pretrain/`, `report/`, … become `objcrop.pretrain`, `objcrop.report`, …), a layout mutmut
cannot map back to module names, and mutating the working tree itself would hand mutants to anybody
running tests meanwhile. So the package is laid out as it is imported (`objcrop/pretrain/...`) in a
scratch folder (default output/mutation/, ignored by git), with the test files of MODULES beside it;
mutmut copies that into its own `mutants/` folder and runs there. The working tree is never written.

The score per module is killed / (mutants − the equivalent ones listed in equivalent.txt): a mutant
that survives, times out without failing, or that no selected test reaches counts as not killed.
Run `python benchmarks/mutation/run.py --help` for the options; the table is printed and written to
OUT/scores.md.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from typing import Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# import name of each stage folder (setup.py's package_dir)
STAGES = {"objcrop": "objcrop", "pretrain": "objcrop/pretrain", "convert": "objcrop/convert",
          "detection": "objcrop/detection", "report": "objcrop/report", "eval_configs": "objcrop/eval_configs"}
# module file (as imported) -> the fast test files (or test ids) that are meant to kill its mutants
MODULES: Dict[str, List[str]] = {
    "objcrop/pretrain/methods/losses.py": [
        "tests/test_pretrain_methods.py::test_moco_loss_prefers_the_positive_key",
        "tests/test_pretrain_methods.py::test_byol_loss_is_two_minus_two_cosine",
        "tests/test_pretrain_methods.py::test_embedding_spread_tells_spread_embeddings_from_collapsed_ones",
        "tests/test_pretrain_methods.py::test_infonce_logits_stay_float32_under_bf16_autocast",
        "tests/test_mutation_gaps.py"],
    "objcrop/pretrain/views/geometry.py": ["tests/test_views_policies.py", "tests/test_views_released.py",
                                           "tests/test_mutation_gaps.py", "tests/test_core_mutants_geometry.py"],
    "objcrop/pretrain/views/released.py": ["tests/test_views_released.py", "tests/test_mutation_gaps.py"],
    "objcrop/convert/names.py": ["tests/test_convert_names.py", "tests/test_mutation_gaps.py"],
    "objcrop/report/aggregate.py": ["tests/test_report_table.py", "tests/test_report_gap.py",
                                    "tests/test_report_baseline.py", "tests/test_mutation_gaps.py",
                                    "tests/test_core_mutants_aggregate.py"],
    "objcrop/report/baseline.py": ["tests/test_report_baseline.py"],
    "objcrop/report/stats.py": ["tests/test_report_stats.py", "tests/test_mutation_gaps.py"],
    "objcrop/pretrain/proposals/store_format.py": ["tests/test_proposals_store.py", "tests/test_mutation_gaps.py",
                                                   "tests/test_core_mutants_store_format.py"],
    "objcrop/datasets/boxes.py": ["tests/test_records.py", "tests/test_datasets_quirks.py",
                                  "tests/test_mutation_gaps.py"],
    "objcrop/records.py": ["tests/test_records.py", "tests/test_report_baseline.py", "tests/test_mutation_gaps.py",
                           "tests/test_core_mutants_records.py"],
}
SUPPORT = ["tests/conftest.py", "tests/_repo_files.py"]
# Tests of the files above left out of the mutation runs, with why: each mutant that no test kills reruns every
# selected test that reaches its function, so a few slow tests set the run's length (benchmarks/mutation.md).
# `make test` still runs them; what they check is also checked by a faster test, or is not the module's logic.
SLOW: Dict[str, str] = {
    "tests/test_views_released.py::test_the_object_view_draws_scale_from_zero_without_scale_eps":
        "4,000 draws, seconds per mutant; test_core_mutants_geometry checks the scale_eps floor in one draw",
    "tests/test_report_table.py::test_cli_errors_name_the_path":
        "a subprocess that imports the report anew for every mutant; the CLI's messages, not the table",
    "tests/test_report_table.py::test_probe_over_epochs_plot_when_several_epochs":
        "draws a matplotlib figure per mutant; test_core_mutants_aggregate checks the series it plots",
    "tests/test_convert_names.py::test_depth_reads_the_same_from_torchvision_and_detectron2_names[resnet101-101]":
        "builds a ResNet-101; resnet50 has the same bottleneck layout, only more blocks in res4",
    "tests/test_proposals_store.py::test_large_store_opens_without_reading_everything":
        "writes a large store to time its opening: lazy reading, not the format",
}


def stage(out: str, modules: List[str]) -> List[str]:
    """Lay the package out as imported, plus the selected tests; returns the pytest selection."""
    if os.path.isdir(out):
        if os.listdir(out) and not os.path.exists(os.path.join(out, "setup.cfg")):
            sys.exit(f"--out {out}: not empty and not an earlier mutation run; refusing to delete it")
        shutil.rmtree(out)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder, dest in STAGES.items():
        shutil.copytree(os.path.join(REPO, folder), os.path.join(out, dest), ignore=ignore,
                        dirs_exist_ok=True)
    selection = sorted({t for m in modules for t in MODULES[m]})
    os.makedirs(os.path.join(out, "tests"))
    for path in sorted({t.split("::")[0] for t in selection} | set(SUPPORT)):
        shutil.copy2(os.path.join(REPO, path), os.path.join(out, path))
    cfg = ["[mutmut]", "source_paths=objcrop", "only_mutate=", *[f"    {m}" for m in modules],
           "pytest_add_cli_args_test_selection=", *[f"    {t}" for t in selection],
           "pytest_add_cli_args=", "    -p", "    no:cacheprovider", "    -q",
           *[f"    --deselect={t}" for t in SLOW if t.split("::")[0] in {s.split("::")[0] for s in selection}], ""]
    with open(os.path.join(out, "setup.cfg"), "w") as f:
        f.write("\n".join(cfg))
    return selection


def equivalents() -> Dict[str, str]:
    """mutant name -> why it cannot change behaviour (equivalent.txt: `name  reason` per line)."""
    out = {}
    with open(os.path.join(HERE, "equivalent.txt")) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                name, _, reason = line.partition(" ")
                out[name] = reason.strip()
    return out


def outcomes(out: str) -> Dict[str, Dict[str, int]]:
    """module file -> {mutant name: exit code} from mutmut's .meta files."""
    found = {}
    for module in MODULES:
        meta = os.path.join(out, "mutants", module + ".meta")
        if os.path.exists(meta):
            with open(meta) as f:
                found[module] = json.load(f).get("exit_code_by_key", {})
    return found


def status(code) -> str:
    """mutmut's own name for an exit code; a crash of the tests (segfault) is a kill."""
    from mutmut.stats import status_by_exit_code

    name = status_by_exit_code[code]
    return "killed" if name == "segfault" else name


def table(found: Dict[str, Dict[str, int]], equiv: Dict[str, str]) -> str:
    lines = ["| module | mutants | equivalent | killed | not killed (survived / timeout / no tests / not run) "
             "| score (killed / non-equivalent) |", "|---|---:|---:|---:|---:|---:|"]
    survivors = defaultdict(list)
    for module, codes in found.items():
        counts = Counter()
        for name, code in codes.items():
            s = "equivalent" if name in equiv else status(code)
            counts[s] += 1
            if s not in ("killed", "equivalent"):
                survivors[module].append(f"{name} ({s})")
        total = len(codes) - counts["equivalent"]
        score = f"{100 * counts['killed'] / total:.1f} %" if total else "—"
        detail = " / ".join(str(counts[k]) for k in ("survived", "timeout", "no tests", "not checked"))
        lines.append(f"| {module} | {len(codes)} | {counts['equivalent']} | {counts['killed']} | "
                     f"{total - counts['killed']} ({detail}) | {score} |")
    lines.append("")
    for module, names in survivors.items():
        lines.append(f"not killed in {module}: " + ", ".join(sorted(names)))
    return "\n".join(lines) + "\n"


def _functions(path: str) -> Dict[str, str]:
    """Source of every function in one of mutmut's mutated files, by name (x_f__mutmut_3, x_f__mutmut_orig;
    methods as xǁClassǁm__mutmut_3)."""
    import ast

    with open(path) as f:
        text = f.read()
    lines = text.splitlines()
    return {node.name: "\n".join(lines[node.lineno - 1:node.end_lineno]) for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name}


def write_survivors(out: str, found: Dict[str, Dict[str, int]], equiv: Dict[str, str]) -> None:
    """OUT/survivors.diff: the diff of every mutant not killed against its original, to read when adding tests."""
    import difflib

    with open(os.path.join(out, "survivors.diff"), "w") as f:
        for module, codes in found.items():
            funcs = _functions(os.path.join(out, "mutants", module))
            for name, code in sorted(codes.items()):
                if name in equiv or status(code) == "killed":
                    continue
                local = name.rsplit(".", 1)[-1]
                orig = funcs.get(local.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
                diff = difflib.unified_diff(orig.splitlines(), funcs.get(local, "").splitlines(), lineterm="", n=0)
                f.write(f"# {name}: {status(code)}\n" + "\n".join(list(diff)[2:]) + "\n\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Example: python benchmarks/mutation/run.py --only objcrop/report/baseline.py")
    p.add_argument("--out", default=os.path.join(REPO, "output", "mutation"),
                   help="scratch folder for the staged copy and mutmut's mutants/ (deleted first; default: %(default)s)")
    p.add_argument("--only", nargs="+", choices=sorted(MODULES), metavar="MODULE",
                   help="mutate only these module files (as imported, e.g. objcrop/report/stats.py); default: all of "
                        + ", ".join(MODULES))
    p.add_argument("--jobs", type=int, default=2, help="mutants tested at once (mutmut --max-children; default: %(default)s)")
    p.add_argument("--diffs", action="store_true",
                   help="also write OUT/survivors.diff: each mutant not killed, as a diff against its original")
    p.add_argument("--report-only", action="store_true", help="score an earlier run in --out without running mutmut")
    args = p.parse_args(argv)
    out = os.path.abspath(args.out)
    if not args.report_only:
        stage(out, args.only or list(MODULES))
        env = dict(os.environ, PYTHONPATH=out, OMP_NUM_THREADS="1", OBJCROP_TESTING="1")
        mutmut = os.path.join(os.path.dirname(sys.executable), "mutmut")
        with open(os.path.join(out, "mutmut.log"), "w") as log:  # its progress spinner, kept out of the terminal
            rc = subprocess.call([mutmut, "run", "--max-children", str(args.jobs)], cwd=out, env=env,
                                 stdout=log, stderr=subprocess.STDOUT)
        if rc != 0:
            print(f"mutmut exited with {rc}: see {out}/mutmut.log", file=sys.stderr)
    found, equiv = outcomes(out), equivalents()
    text = table(found, equiv)
    if args.diffs:
        write_survivors(out, found, equiv)
    with open(os.path.join(out, "scores.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
