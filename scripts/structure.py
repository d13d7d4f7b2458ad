"""Print the code's structure: Python files and lines per stage folder, the largest files and
functions, and the imports between stages (an arrow A -> B: some module of A imports B).

    python scripts/structure.py [REPO]

Used for docs/ARCHITECTURE.md and to check a refactoring's before and after (run it on two
checkouts). Reads files only; imports nothing of objcrop.
"""
import ast
import collections
import os
import sys

STAGES = {"objcrop": "core", "pretrain": "pretrain", "convert": "convert", "detection": "detection",
          "report": "report", "scripts": "scripts", "benchmarks": "benchmarks"}
NAMESPACE = {"objcrop.pretrain": "pretrain", "objcrop.convert": "convert", "objcrop.detection": "detection",
             "objcrop.report": "report", "objcrop.pipeline": "core/pipeline"}


def python_files(repo: str, folder: str):
    for root, _, files in os.walk(os.path.join(repo, folder)):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(root, f)


def target_stage(module: str) -> str:
    for prefix, stage in NAMESPACE.items():
        if module == prefix or module.startswith(prefix + "."):
            return stage
    return "core" if module.split(".")[0] == "objcrop" else ""


def source_stage(repo: str, path: str, folder: str) -> str:
    rel = os.path.relpath(path, repo)
    return "core/pipeline" if rel.startswith("objcrop/pipeline/") else STAGES[folder]


def scan(repo: str):
    lines, arrows, functions = collections.Counter(), collections.Counter(), []
    files = collections.Counter()
    sizes = []
    for folder in STAGES:
        for path in python_files(repo, folder):
            src = open(path, encoding="utf-8").read()
            n = src.count("\n")
            stage = source_stage(repo, path, folder)
            lines[stage] += n
            files[stage] += 1
            sizes.append((n, os.path.relpath(path, repo)))
            tree = ast.parse(src)
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions.append((node.end_lineno - node.lineno + 1, f"{os.path.relpath(path, repo)}:{node.name}"))
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                for name in names:
                    target = target_stage(name)
                    if target and target != stage:
                        arrows[(stage, target)] += 1
    return files, lines, arrows, sorted(sizes, reverse=True), sorted(functions, reverse=True)


def main(argv=None) -> int:
    repo = (argv or sys.argv[1:] or ["."])[0]
    files, lines, arrows, sizes, functions = scan(repo)
    print("| folder | .py files | lines |\n|---|---:|---:|")
    for stage in sorted(files):
        print(f"| {stage} | {files[stage]} | {lines[stage]} |")
    print(f"\nlargest files: " + ", ".join(f"{p} ({n})" for n, p in sizes[:6]))
    print(f"files over 400 lines: {sum(n > 400 for n, _ in sizes)}; "
          f"functions over 60 lines: {sum(n > 60 for n, _ in functions)}")
    print("longest functions: " + ", ".join(f"{p} ({n})" for n, p in functions[:6]))
    print("\nimports between stages (count of import statements):")
    for (a, b), n in sorted(arrows.items()):
        back = " <- CYCLE" if (b, a) in arrows and a not in ("scripts", "benchmarks") else ""
        print(f"  {a} -> {b}: {n}{back}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
