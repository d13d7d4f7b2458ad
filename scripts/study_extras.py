"""The measurements docs/results.md quotes besides the report tables, for one study output.

    python scripts/study_extras.py OUT/study        # after the pipeline; writes OUT/study/extras/
    python scripts/study_extras.py --plan-only OUT/study_gpu   # only OUT/study_gpu/plan.json
    python scripts/study_extras.py --refresh-record docs/results/study   # the record's plan.json, made again

* view statistics of every policy the study pretrained with (`objcrop views stats`: views
  holding half an object, pairs showing the same object, object cover), with the boxes
  the runs used (ground truth, each proposal store);
* proposal recall of every store against the annotations (`objcrop proposals stats`);
* a grid of sampled view pairs per policy (`objcrop views show`);
* the preset's plan, OUT/plan.json: every task with the results it writes (relative to OUT), so
  that the study page (`objcrop report study`, which reads files only) can list what a rerun of
  the preset would still run. It is the plan of the preset as it is now: recorded with the results,
  and made again in the record (--refresh-record) when the preset changes between whole runs.

Each measurement is one `objcrop` command (its exact argv is kept in extras/commands.txt);
one that already has its output is not repeated.
"""
import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
from typing import List, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STUDY_CONFIG = os.path.join(REPO, "eval_configs", "pretrain", "study.yaml")

# (policy, box source) pairs measured; "none" = random crops (no boxes)
POLICIES = [("random", "gt"), ("obj-obj-dilate", "gt"), ("obj-scene", "gt"), ("obj-obj", "gt")]


def run_objcrop(argv: List[str], output: str, log: List[str]) -> None:
    """`python -m objcrop ARGV` in the repository, logged in `log`; skipped when `output` exists."""
    log.append(" ".join(shlex.quote(a) for a in argv))
    if os.path.isfile(output):
        return
    subprocess.run([sys.executable, "-m", "objcrop"] + argv, check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL)


def write_plan(study: str, preset: str, pipeline_args: Sequence[str] = ()) -> str:
    """OUT/plan.json: the preset's tasks (objcrop.pipeline's plan for this output directory), with the
    pipeline's own selection flags (`--tags b256-100e`, `--seeds 0 1 2`) applied when given."""
    from objcrop.io import write_json_atomic
    from objcrop.pipeline import STAGE_ORDER, planned_results

    tasks = planned_results(preset, pipeline_args, study)
    path = os.path.join(study, "plan.json")
    plan = {"preset": preset, "stage_order": STAGE_ORDER, "tasks": tasks}
    if pipeline_args:
        plan["pipeline_args"] = list(pipeline_args)
    write_json_atomic(path, plan)
    return path


def refresh_record_plan(record_path: str) -> str:
    """A study record's plan.json made again from its preset as it is now (the preset and selection flags
    the record's plan names), so that the study page's "Not run yet" lists the rows added to the preset
    since the record's last run. tests/test_study_page.py checks that every record's plan is current."""
    import tempfile

    from objcrop.errors import ObjcropError
    from objcrop.report.record import StudyRecord

    record = StudyRecord.open(record_path)
    plan = record.read("plan.json")
    if not isinstance(plan, dict) or not plan.get("preset"):
        raise ObjcropError(f"{record_path}: no plan.json naming its preset (write one with --plan-only beside a run)")
    with tempfile.TemporaryDirectory() as out:
        with open(write_plan(out, plan["preset"], plan.get("pipeline_args") or []), encoding="utf-8") as f:
            tasks = len(json.load(f)["tasks"])
        record.save_output(out)
    return f"{record_path}: plan.json made again from the preset {plan['preset']} ({tasks} tasks)"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="a study output directory (the pipeline's --out)")
    p.add_argument("--num-images", type=int, default=300, help="images measured per policy")
    p.add_argument("--pairs", type=int, default=10, help="view pairs per image")
    p.add_argument("--preset", help="the pipeline preset of the output, for plan.json (default: the output "
                                    "directory's name, e.g. study_hard)")
    p.add_argument("--plan-only", action="store_true", help="write plan.json and measure nothing")
    p.add_argument("--tags", help='the pipeline\'s --tags of the output, for plan.json (e.g. "b256-100e")')
    p.add_argument("--seeds", help='the pipeline\'s --seeds of the output, for plan.json (e.g. "0 1 2")')
    p.add_argument("--refresh-record", action="store_true",
                   help="STUDY is a study record (docs/results/<study>): make its plan.json again from the "
                        "preset as it is now, with the preset and flags the record's plan names; measures nothing")
    args = p.parse_args(argv)
    if args.refresh_record:
        print(refresh_record_plan(args.study))
        return 0

    study = os.path.abspath(args.study)
    selection = [x for flag, v in (("--tags", args.tags), ("--seeds", args.seeds)) if v for x in (flag, v)]
    print(write_plan(study, args.preset or os.path.basename(study.rstrip(os.sep)), selection))
    if args.plan_only:
        return 0
    data = os.path.join(study, "data")
    if not os.path.isfile(os.path.join(data, "meta.json")):
        # a rerun on a new machine that found every result in the study's record made no data:
        # the record keeps the extras measured before
        print(f"study_extras: {data} holds no dataset; nothing measured (a record keeps earlier extras)")
        return 0
    train = f"synth:{data}:train"
    out = os.path.join(study, "extras")
    os.makedirs(out, exist_ok=True)
    commands: List[str] = []
    stores = sorted(glob.glob(os.path.join(study, "proposals", "*.store")))
    sources = [("gt", "gt")] + [(os.path.splitext(os.path.basename(s))[0], s) for s in stores
                                if not s.endswith("gt.store")]
    pairs = POLICIES + [("obj-obj-dilate", name) for name, _ in sources if name != "gt"]
    for policy, source in pairs:
        spec = dict(sources)[source]
        tag = f"{policy}_{source}"
        run_objcrop(["views", "stats", "--dataset", train, "--policy", policy, "--proposals", spec,
                     "--config", STUDY_CONFIG, "--num-images", str(args.num_images), "--pairs", str(args.pairs),
                     "--json", os.path.join(out, f"views_{tag}.json"), "--no-progress"],
                    os.path.join(out, f"views_{tag}.json"), commands)
        if policy != "obj-obj":
            run_objcrop(["views", "show", "--dataset", train, "--policy", policy, "--proposals", spec,
                         "--config", STUDY_CONFIG, "--num-images", "3", "--pairs", "2", "--cell", "96",
                         "--out", os.path.join(out, f"views_{tag}.png")],
                        os.path.join(out, f"views_{tag}.png"), commands)
    for name, spec in sources[1:]:
        run_objcrop(["proposals", "stats", "--store", spec, "--dataset", train, "--json",
                     os.path.join(out, f"proposals_{name}.json")],
                    os.path.join(out, f"proposals_{name}.json"), commands)
    with open(os.path.join(out, "commands.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(f"objcrop {c}" for c in commands) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
