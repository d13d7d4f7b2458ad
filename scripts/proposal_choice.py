"""Issue 20 §3's ranked unsupervised proposal store, chosen on recall statistics alone.

    python scripts/proposal_choice.py OUT/study --out docs/results/study/proposal_choice.md

docs/preregistration.md leaves one thing to an amendment: which unsupervised method with an
objectness score gives the ranked store (the top k = 10 boxes per image) of H2 and H4. The rule,
fixed here before any candidate store is computed:

* candidates: every image method that ranks its boxes and runs on this machine without a download
  (selective search, fast mode, as proposals/selective_search.yaml; the five saliency methods with
  their defaults). BING is the paper's method but needs OpenCV's trained model, which objcrop never
  fetches; where --bing-model names it, BING is a candidate too (as proposals/bing_paper.yaml);
* each is computed on the variant's training split (OUT/data, the images the pretraining sees) and
  scored by `objcrop proposals stats --top-k 10`;
* the chosen method has the highest recall@0.5 of each image's 10 best-scored boxes (the share of
  annotated objects one of them covers); a tie goes to the higher on-object@0.5 (the share of those
  boxes that cover an object). No pretraining or probe result enters.

Writes the stores and their statistics under OUT/proposal_choice/ (a rerun keeps what is there: each
step is skipped when its output exists) and the table, with the rule and the chosen method, to --out.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_extras import run_objcrop  # noqa: E402  (the same runner: logged, skipped when done)

TOP_K = 10  # the paper's k (docs/preregistration.md)
IOUS = ("0.5", "0.7")
SALIENCY = ("saliency-spectral", "saliency-fine-grained", "saliency-rbd", "saliency-gs", "saliency-mc")


def candidates(bing_model: str) -> Dict[str, List[str]]:
    """method -> the `objcrop proposals compute` arguments that select it."""
    found = {"selective-search": ["--config-file", "proposals/selective_search.yaml"]}
    found.update({m: ["--method", m] for m in SALIENCY})
    if bing_model:
        found["bing"] = ["--config-file", "proposals/bing_paper.yaml", "--bing-model", bing_model]
    return found


def measure(study: str, method: str, args: List[str], workers: int, log: List[str]) -> Dict[str, dict]:
    """{"top": stats of each image's TOP_K best boxes, "all": stats of every box} for one method."""
    folder = os.path.join(study, "proposal_choice")
    os.makedirs(folder, exist_ok=True)
    dataset = f"synth:{os.path.join(study, 'data')}:train"
    store = os.path.join(folder, f"{method}.store")
    run_objcrop(["proposals", "compute", *args, "--dataset", dataset, "--out", store, "--workers", str(workers),
                 "--resume"], store, log)
    out = {}
    for name, top_k in (("top", TOP_K), ("all", 0)):
        path = os.path.join(folder, f"{method}.stats_top{top_k}.json")
        run_objcrop(["proposals", "stats", "--store", store, "--dataset", dataset, "--top-k", str(top_k),
                     "--iou", *IOUS, "--json", path], path, log)
        with open(path, encoding="utf-8") as f:
            out[name] = json.load(f)
    return out


def chosen(stats: Dict[str, Dict[str, dict]]) -> str:
    """The rule of the module docstring: highest top-k recall@0.5, then highest top-k on-object@0.5."""
    return max(stats, key=lambda m: (stats[m]["top"]["recall@0.5"], stats[m]["top"]["on_object@0.5"]))


def table(study: str, stats: Dict[str, Dict[str, dict]], log: List[str], bing_model: Optional[str]) -> str:
    best = chosen(stats)
    top = stats[best]["top"]
    lines = [f"# The ranked proposal store for issue 20 §3 ({os.path.basename(os.path.normpath(study))})", "",
             "Written by `python scripts/proposal_choice.py` (its docstring fixes the rule: the highest recall@0.5 "
             f"of each image's {TOP_K} best-scored boxes, a tie going to the higher on-object@0.5). Training split, "
             f"{top['gt_objects']} annotated objects. Recall: share of the objects that one of the boxes covers with "
             "IoU at least the threshold; on-object: share of the boxes that cover an object so.", "",
             f"| method | boxes per image | recall@0.5, top {TOP_K} | recall@0.7, top {TOP_K} | "
             f"on-object@0.5, top {TOP_K} | on-object@0.7, top {TOP_K} | recall@0.5, every box | "
             "on-object@0.5, every box |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for method in sorted(stats, key=lambda m: -stats[m]["top"]["recall@0.5"]):
        t, a = stats[method]["top"], stats[method]["all"]
        name = f"**{method}** (chosen)" if method == best else method
        lines.append(f"| {name} | {a['boxes_per_image']['mean']:.1f} | {t['recall@0.5']:.3f} | {t['recall@0.7']:.3f} | "
                     f"{t['on_object@0.5']:.3f} | {t['on_object@0.7']:.3f} | {a['recall@0.5']:.3f} | "
                     f"{a['on_object@0.5']:.3f} |")
    if not bing_model:
        lines += ["", "BING (the paper's method) is not a candidate: its trained model was not given (--bing-model)."]
    lines += ["", "Commands:", ""] + [f"    objcrop {c}" for c in log]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("study", help="a study output folder holding data/ (the variant's generated dataset)")
    p.add_argument("--out", required=True, help="markdown file for the table")
    p.add_argument("--workers", type=int, default=2, help="proposal worker processes")
    p.add_argument("--bing-model", default="", help="OpenCV's BING model folder, if you have it (makes BING a candidate)")
    p.add_argument("--methods", nargs="+", default=None, help="only these candidates (a smoke run; not the rule)")
    args = p.parse_args(argv)
    if not os.path.isdir(os.path.join(args.study, "data")):
        p.error(f"{args.study}: no data/ folder (run the pipeline's data stage first)")
    log: List[str] = []
    runs = candidates(args.bing_model)
    if args.methods:
        runs = {m: runs[m] for m in args.methods}
    stats = {m: measure(args.study, m, a, args.workers, log) for m, a in runs.items()}
    from objcrop.io import write_text_atomic

    write_text_atomic(args.out, table(args.study, stats, log, args.bing_model))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
