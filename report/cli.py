"""`objcrop report RUNS… --out DIR`: every results.json below RUNS → tables and plots.
`objcrop report study …`: the study page (docs/results.md) from the study records (report/study_page.py).
`objcrop report record OUT RECORD`: add a pipeline output's results to a study record (report/record.py).

Writes DIR/results.md, DIR/results.csv, DIR/results.tex (booktabs), DIR/runs.csv (one
line per results.json, for anyone who wants to re-aggregate) and PNG plots in
DIR/plots/. Every file is written atomically, so a reader never sees half a table. With
`--registration`, the scores of a registered arm stay out of the tables and plots until its
comparison is complete (docs/preregistration.md: fixed n, no peeking).
"""
import argparse
import csv
import datetime
import io
import logging
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from objcrop.cli import run_stage_main
from objcrop.errors import ObjcropError
from objcrop.io import write_text_atomic
from objcrop.logger import setup_logger
from objcrop.report.aggregate import (Flag, PlainBudget, Table, build_table, detection_budgets, measurements_of,
                                      mixed_schedule_flags, pretrain_flag, row_key)
from objcrop.report.collect import Collection, collect, loss_curve
from objcrop.report import prereg, study_page
from objcrop.report.plots import write_plots
from objcrop.report.record import StudyRecord, solver_ran
from objcrop.report.study_tables import pretrain_row, runs_csv_values
from objcrop.report.tables import to_csv, to_latex, to_markdown

logger = logging.getLogger("objcrop.report")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="objcrop report",
        description=(
            "Collect every results.json (pretraining, probe, detection) below the given directories "
            "and write tables (Markdown, CSV, LaTeX booktabs) and PNG plots. Rows are pretraining "
            "settings (method, view policy, proposals, epochs), columns are benchmarks; seeds are "
            "aggregated as mean ± sample std with n, with Δ against the random-crop baseline and, where "
            "the reference rows random_init (a random backbone; detection from scratch) and supervised are "
            "present, the gap closed between them ((row − random_init) / (supervised − random_init), %). Failed "
            "or NaN runs are flagged with † and listed, never dropped. A RUNS path may be a study record "
            "(record.json, or a directory holding one) or a path inside one (RECORD/runs). Subcommands: "
            "`objcrop report study --help` (the study page, docs/results.md, from the study records) and "
            "`objcrop report record --help` (add a pipeline output's results to a study record)."
        ),
    )
    p.add_argument("runs", nargs="+", metavar="RUNS",
                   help="run directories (searched recursively for results.json), results.json files, or study "
                        "records (record.json, a directory holding one, or RECORD/runs)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for the tables and plots/")
    p.add_argument("--decimals", type=int, default=1, help="decimals shown in md/tex tables (default: 1)")
    p.add_argument("--title", default="objcrop results", help="title of results.md (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="write the tables only")
    p.add_argument("--registration", metavar="YAML",
                   help="a preregistration (docs/preregistration.yaml): the probe and detection scores of its "
                        "registered arms are left out of the tables and plots until both arms of their "
                        "hypothesis hold every registered seed (fixed n, no peeking); runs.csv keeps them. "
                        "Needs --study")
    p.add_argument("--study", metavar="NAME",
                   help="the registration's name for the study these runs belong to (its hypotheses' "
                        "`study`, e.g. study_hard)")
    return p


def results_table(collection: Collection, budgets: Optional[Dict[str, PlainBudget]] = None) -> Table:
    """`budgets`: the detection budgets that keep the plain headers (by default this collection's own)."""
    unreadable = [Flag(u.path, f"unreadable results.json: {u.reason}") for u in collection.unreadable]
    budgets = detection_budgets(r.data for r in collection.runs) if budgets is None else budgets
    mixed = mixed_schedule_flags(((r.data, solver_ran(r.data, r.config_value("SOLVER")), r.run_dir)
                                  for r in collection.runs if r.stage == "detection"), budgets)
    return build_table([(r.data, r.run_dir) for r in collection.runs], extra_flags=unreadable + mixed, budgets=budgets)


def runs_csv(collection: Collection, budgets: Optional[Dict[str, PlainBudget]] = None) -> str:
    """Long format: one line per results.json with its row, stage, status and numbers; `budgets`: the
    detection budgets that keep the plain headers (by default this collection's own)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["run_dir", "stage", "status", "method", "policy", "proposals", "epochs", "arch",
                "pretrain_data", "pretrain_seed", "seed", "column", "value", "flag", "protocol"])
    budgets = detection_budgets(r.data for r in collection.runs) if budgets is None else budgets
    for r in collection.runs:
        row = row_key(r.data.get("pretrain"))
        pre_seed = (r.data.get("pretrain") or {}).get("seed", "") if isinstance(r.data.get("pretrain"), dict) else ""
        common = [r.run_dir, r.stage, r.data.get("status", ""), row.method, row.policy, row.proposals,
                  "" if row.epochs is None else row.epochs, row.arch, row.dataset, pre_seed, r.data.get("seed", "")]
        if r.stage == "pretrain":
            flag = pretrain_flag(r.data, r.run_dir)
            w.writerow(common + ["final_loss", r.data.get("final_loss", ""), flag.reason if flag else "", ""])
            continue
        for m in measurements_of(r.data, r.run_dir, budgets):
            w.writerow(common + [m.column.header(with_dataset=True), "" if m.value is None else repr(m.value),
                                 m.flag.reason if m.flag else "", m.column.probe_protocol])
    for u in collection.unreadable:
        w.writerow([os.path.dirname(u.path), "", "unreadable"] + [""] * 10 + [u.reason, ""])
    return buf.getvalue()


def _logged_curves(collection: Collection, stage: str):
    """(run, iterations, losses) of every `stage` run that logged a loss."""
    for r in collection.runs:
        if r.stage == stage:
            its, losses = loss_curve(r)
            if its:
                yield r, its, losses


def loss_curves(collection: Collection):
    return [(row_key(r.data.get("pretrain")), os.path.basename(r.run_dir), its, losses)
            for r, its, losses in _logged_curves(collection, "pretrain")]


def detection_curves(collection: Collection):
    """(task, row, fine-tuning seed, iterations, total losses) per detection fine-tuning with a logged
    curve: two fine-tunings of the same weights that end far apart are told apart here (a diverged or
    stalled run against seed noise), which the final AP alone cannot do. Where a row's fine-tunings start
    from several backbones (its pretraining seeds), the label names the backbone too: `s3 seed 0`."""
    logged = [(str(r.data.get("task", "detection")), row_key(r.data.get("pretrain")),
               (r.data.get("pretrain") or {}).get("seed"), f"seed {r.data.get('seed', '?')}", its, losses)
              for r, its, losses in _logged_curves(collection, "detection")]
    backbones: Dict[Tuple[str, Any], set] = {}
    for task, row, backbone, *_ in logged:
        backbones.setdefault((task, row), set()).add(backbone)
    return [(task, row, f"s{backbone} {fine}" if len(backbones[(task, row)]) > 1 else fine, its, losses)
            for task, row, backbone, fine, its, losses in logged]


def _shown_path(path: str) -> str:
    """A path as the report names it: relative to the working directory when it lies below it (a
    report kept in a repository then reads the same on every checkout), else absolute."""
    full = os.path.abspath(path)
    rel = os.path.relpath(full, os.getcwd())
    return full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def _preamble(collection: Collection) -> str:
    stages = {}
    for r in collection.runs:
        stages[r.stage] = stages.get(r.stage, 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(stages.items())) or "none"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    roots = ", ".join(f"`{_shown_path(r)}`" for r in collection.roots)
    return (f"Generated by `objcrop report` on {when} from {len(collection.runs)} results.json files "
            f"({counts}) under {roots}.")


def _withholding(collection: Collection, runs_text: str, registration: Optional[dict], study: str):
    """(the collection without the withheld scores, a sentence saying what was withheld): the scores
    of registered arms whose comparison is not complete (report/prereg.py: interim_rows). Their
    pretraining runs stay, so the table still shows that they ran."""
    # a record's runs (docs/results/<study>/runs): the runs its missing.yaml declares missing count as in
    missing = {k: v for root in collection.roots if os.path.basename(os.path.normpath(root)) == "runs"
               for k, v in prereg.load_missing(os.path.dirname(os.path.abspath(root))).items()}
    withheld = prereg.interim_rows(registration, study, runs_csv_values(io.StringIO(runs_text))[0], missing)
    if not withheld:
        return collection, ""
    kept = [r for r in collection.runs if r.stage == "pretrain" or pretrain_row(r.data.get("pretrain")) not in withheld]
    arms = ", ".join(f"`{' '.join(row[1:3])}` (e{row[3]})" for row in sorted(withheld))
    note = (f" The probe and detection scores of {len(collection.runs) - len(kept)} of them are withheld (their "
            f"rows show '—'): they belong to the registered arms {arms}, each read only once both arms of its "
            f"hypothesis hold all {registration['seeds_per_arm']} registered seeds (docs/preregistration.md: "
            f"fixed n, no peeking); runs.csv keeps them, as the record does.")
    return Collection(roots=collection.roots, runs=kept, unreadable=collection.unreadable), note


def write_report(roots: List[str], out_dir: str, decimals: int = 1, title: str = "objcrop results",
                 plots: bool = True, registration: Optional[dict] = None, study: str = "") -> dict:
    """Collect, aggregate and write everything; returns the paths written and the table. With a
    `registration`, the scores of `study`'s registered arms are withheld until complete."""
    collection = collect(roots)
    # the whole collection's budgets: the table's headers follow runs.csv's, also when withheld runs hold the largest
    budgets = detection_budgets(r.data for r in collection.runs)
    runs_text = runs_csv(collection, budgets)
    shown, withheld_note = _withholding(collection, runs_text, registration, study)
    table = results_table(shown, budgets)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "md": os.path.join(out_dir, "results.md"),
        "csv": os.path.join(out_dir, "results.csv"),
        "tex": os.path.join(out_dir, "results.tex"),
        "runs_csv": os.path.join(out_dir, "runs.csv"),
    }
    plot_paths = (write_plots(table, loss_curves(collection), os.path.join(out_dir, "plots"),
                             detection_curves(collection)) if plots else [])
    markdown = to_markdown(table, decimals, title=title, preamble=_preamble(collection) + withheld_note)
    if plot_paths:
        markdown += "\n" + "\n".join(f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in plot_paths) + "\n"
    write_text_atomic(paths["csv"], to_csv(table))
    write_text_atomic(paths["tex"], to_latex(table, decimals))
    write_text_atomic(paths["runs_csv"], runs_text)
    write_text_atomic(paths["md"], markdown)  # last: its presence means the report is complete
    return {"paths": paths, "plots": plot_paths, "table": table, "collection": collection,
            "withheld": len(collection.runs) - len(shown.runs)}


def study_main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="objcrop report study", description=study_page.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    study_page.add_arguments(p)
    print(study_page.write_page(p.parse_args(argv)))
    return 0


def record_main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(
        prog="objcrop report record",
        description="Add the small result files of a pipeline output (every run's results.json, config and "
                    "metrics summary, data/meta.json, learnability.json, extras/, the pipeline log) to a study "
                    "record; a run the record holds with status ok takes only the same result, or another with --replace. Checkpoints, "
                    "caches and data stay out. `run_pipeline.sh --records RECORD` then skips every task "
                    "whose result the record holds.")
    p.add_argument("out", help="a pipeline output directory (run_pipeline.sh --out)")
    p.add_argument("record", help="the record: a directory holding record.json (created when missing), "
                                  "the record file itself, or a legacy record directory")
    p.add_argument("--runs", nargs="+", metavar="GLOB",
                   help="record only the runs whose folder in OUT (runs/<stage>/<name>[/seed<k>]) matches one of "
                        "these globs, e.g. 'runs/detect_voc/*/*': the fine-tunings of registered backbones trained "
                        "again for their fine-tuning only, whose first pretraining entry (the one their probe "
                        "measured) stays in the record (docs/preregistration.md, detection); the supervised "
                        "bound's learnability.json when `supervised` matches, or when a recorded run was fine-tuned or "
                        "probed from it (a training of it other than the recorded one is kept beside it, as "
                        "supervised<...>_for_<stages>/); the other files "
                        "(data/meta.json, the pipeline log, ...) are recorded as without it")
    p.add_argument("--replace", action="store_true",
                   help="let a run's new result replace a different one the record holds with status ok (a probe "
                        "run again on purpose); without it such a run is refused and nothing is recorded, since a "
                        "registered run's record keeps its first training")
    args = p.parse_args(argv)
    record = StudyRecord.open(args.record)
    written = record.save_output(args.out, args.runs, replace=args.replace)
    runs = sum(1 for rel in written if rel.endswith("results.json"))
    which = f" matching {' '.join(args.runs)}" if args.runs else ""
    print(f"objcrop report record: {len(written)} files ({runs} results{which}) from {args.out} recorded in {record.path}")
    return 0


SUBCOMMANDS = {"study": study_main, "record": record_main}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:  # a runs directory named like one: pass it as ./study
        return SUBCOMMANDS[argv[0]](argv[1:])
    args = build_parser().parse_args(argv)
    if args.decimals < 0:
        raise ObjcropError(f"--decimals must be ≥ 0, got {args.decimals}")
    if bool(args.registration) != bool(args.study):
        raise ObjcropError("--registration and --study go together: the registration names its arms per study")
    registration = prereg.load(args.registration) if args.registration else None
    if args.registration and registration is None:
        raise ObjcropError(f"--registration {args.registration}: no such file")
    setup_logger("objcrop.report")
    if registration and not any(h["study"] == args.study for h in registration["hypotheses"]):
        # info, not a warning: scripts/study.sh passes every variant, the unregistered control too
        logger.info("--study %s: %s registers no hypothesis on it (its studies: %s): nothing is withheld",
                    args.study, args.registration, ", ".join(sorted({h["study"] for h in registration["hypotheses"]})))
    out = write_report(args.runs, args.out, args.decimals, args.title, plots=not args.no_plots,
                       registration=registration, study=args.study or "")
    collection, table = out["collection"], out["table"]
    logger.info("collected %d results.json files (%d unreadable) → %d rows × %d columns",
                len(collection.runs), len(collection.unreadable), len(table.rows), len(table.columns))
    if out["withheld"]:
        logger.info("withheld the scores of %d results.json files of registered arms not yet complete (runs.csv "
                    "keeps them)", out["withheld"])
    flags = table.all_flags()
    if flags:
        logger.warning("%d flagged run(s) (failed or NaN), listed under the table", len(flags))
    for p in out["plots"]:
        logger.info("plot: %s", p)
    print(out["paths"]["md"])
    return 0


if __name__ == "__main__":
    sys.exit(run_stage_main(main, None, "objcrop report"))
