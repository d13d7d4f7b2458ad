"""From results.json contents to a table: pure functions, no file access.

Rows are pretraining settings (method, view policy, proposal source, epochs, and —
when they vary — architecture and pretraining data); columns are benchmarks
(probe mAP, VOC AP50/AP/AP75, COCO box and mask AP). A cell aggregates every run of
its row and column (pretraining seeds × fine-tuning seeds) as mean ± sample std with
n. A failed run, or one whose metric is NaN/inf, never enters a mean and never
disappears either: it is kept as a `Flag` on its cell (or its row, for a failed
pretraining run) so the tables can mark it and list the run directory.

Reference rows come first, in every column: `random_init` (the probe on a random backbone;
detection fine-tuned from scratch in the same config) and `supervised` (a backbone trained with
labels). A method row's cell shows Δ to its random-crop row and the gap it closes: where its mean
sits between the reference rows of the same column and architecture, random_init 0 %,
supervised 100 % — each column against its own references, never another task's.

A probe number also depends on the probe's protocol (results.json "protocol": `cached_features`,
objcrop's fast probe, or `main_lincls`, the paper's): each protocol has columns of its own, so that a
cell never mixes them, and every row says which protocol its probe cells come from
(`Table.probe_protocols`). A detection number depends on the fine-tuning budget in the same way
(results.json "iterations" x "ims_per_batch", the images it trained on): where a table holds one task
at several budgets, the largest keeps the plain header and each other budget has columns of its own
(`VOC AP50 [300 it]`, in the plain budget's batches), so that no cell, Δ, gap or best mark compares
fine-tunings of different lengths. The same images on another world size (the linear scaling rule:
more images per batch, fewer iterations) are the same budget, as the pipeline's --records counts them
(report.record.same_budget). A fine-tuning of the same length at
another learning rate, steps or warmup (its results.json's schedule, else its recorded config's) is
named among the table's flags (`mixed_schedule_flags`).
"""
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Tuple

from objcrop.records import Provenance, dataset_label
from objcrop.report.baseline import BASELINE_POLICY, baseline_policy
from objcrop.report.record import budget_words, is_count, planned_budget, same_images_seen, same_schedule

# Row order: reference rows first, then the self-supervised methods.
METHOD_ORDER = ["random_init", "supervised", "moco_v2", "byol"]
# The two ends of the "gap closed" scale (0 % and 100 %).
GAP_LOW, GAP_HIGH = "random_init", "supervised"

# task -> (short label, [(result section, metric)]) in the column order of the paper's tables.
TASKS: Dict[str, Tuple[str, List[Tuple[str, str]]]] = {
    # mAP_batch_mean: main_lincls's released per-batch figure, beside its whole-test-set mAP
    "probe": ("probe", [("", "mAP"), ("", "knn_mAP"), ("", "mAP_batch_mean")]),
    "voc_det": ("VOC", [("box", "AP50"), ("box", "AP"), ("box", "AP75")]),
    "coco_det": ("COCO det", [("box", "AP"), ("box", "AP50"), ("box", "AP75")]),
    "coco_instseg": ("COCO", [("box", "AP"), ("box", "AP50"), ("box", "AP75"),
                              ("mask", "AP"), ("mask", "AP50"), ("mask", "AP75")]),
}
TASK_ORDER = list(TASKS)
METRIC_LABELS = {"mAP": "mAP", "knn_mAP": "kNN mAP", "mAP_batch_mean": "mAP batch mean"}
# The probe protocol of a results.json that names none: probes written before PROBE.PROTOCOL existed
# ran objcrop's cached-feature probe, the default still. Its columns keep the plain header.
DEFAULT_PROBE_PROTOCOL = "cached_features"
# The probe writes mAP as a fraction; detectron2 writes AP in percent. Tables show both in percent.
PERCENT_SCALE = {"probe": 100.0}


@dataclass(frozen=True, order=True)
class RowKey:
    method: str
    policy: str
    proposals: str
    epochs: Optional[int]
    arch: str = ""
    dataset: str = ""


@dataclass(frozen=True)
class Column:
    task: str
    section: str  # "box", "mask" or "" (probe)
    metric: str
    dataset: str = ""  # short dataset label; shown only when one task has several
    protocol: str = ""  # a probe column's protocol other than DEFAULT_PROBE_PROTOCOL ("": the default)
    budget: int = 0  # a detection column's fine-tuning length other than its table's largest (0: that one), in
    # iterations of the largest's batch (PlainBudget.column_budget)

    @property
    def probe_protocol(self) -> str:
        """The protocol of a probe column ("" for other tasks)."""
        return (self.protocol or DEFAULT_PROBE_PROTOCOL) if self.task == "probe" else ""

    def header(self, with_dataset: bool = False) -> str:
        label = TASKS.get(self.task, (self.task, []))[0]
        parts = [label]
        if self.section == "mask" or (self.section == "box" and self.task == "coco_instseg"):
            parts.append(self.section)
        parts.append(METRIC_LABELS.get(self.metric, self.metric))
        if self.protocol:  # a protocol other than the default names itself, so its numbers never pass for the other's
            parts.append(f"[{self.protocol}]")
        if self.budget:  # so does a shorter fine-tuning than the table's
            parts.append(f"[{self.budget} it]")
        head = " ".join(parts)
        return f"{head} ({self.dataset})" if with_dataset and self.dataset else head

    def sort_key(self):
        order = TASK_ORDER.index(self.task) if self.task in TASK_ORDER else len(TASK_ORDER)
        metrics = TASKS.get(self.task, ("", []))[1]
        pos = metrics.index((self.section, self.metric)) if (self.section, self.metric) in metrics else 99
        return (order, self.task, self.dataset, self.protocol, -self.budget, pos, self.section, self.metric)


@dataclass(frozen=True)
class Flag:
    run_dir: str
    reason: str


@dataclass(frozen=True)
class Measurement:
    """One number (or one failure) of one run: what a cell aggregates."""

    row: RowKey
    column: Column
    value: Optional[float]  # None when the run failed or the value is not finite
    run_dir: str
    flag: Optional[Flag] = None


@dataclass
class Cell:
    values: List[float] = field(default_factory=list)
    flags: List[Flag] = field(default_factory=list)
    delta: Optional[float] = None
    gap: Optional[float] = None  # % of the random_init -> supervised gap closed (None: no references)
    best: bool = False

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> Optional[float]:
        """Sample standard deviation (n − 1), as papers report over seeds; None for n < 2."""
        return statistics.stdev(self.values) if len(self.values) >= 2 else None


@dataclass
class Table:
    rows: List[RowKey]
    columns: List[Column]
    cells: Dict[Tuple[RowKey, Column], Cell]
    row_flags: Dict[RowKey, List[Flag]]
    baselines: Dict[RowKey, RowKey]  # row -> its random-crop baseline row
    extra_flags: List[Flag] = field(default_factory=list)  # unreadable results.json files

    def cell(self, row: RowKey, column: Column) -> Cell:
        return self.cells.get((row, column), Cell())

    def all_flags(self) -> List[Flag]:
        """Every flagged run once, in table order, its reasons joined, for the footnote."""
        reasons: Dict[str, List[str]] = {}
        for row in self.rows:
            flags = list(self.row_flags.get(row, []))
            for col in self.columns:
                flags += self.cell(row, col).flags
            for flag in flags:
                if flag.reason not in reasons.setdefault(flag.run_dir, []):
                    reasons[flag.run_dir].append(flag.reason)
        for flag in self.extra_flags:
            if flag.reason not in reasons.setdefault(flag.run_dir, []):
                reasons[flag.run_dir].append(flag.reason)
        return [Flag(run_dir, "; ".join(_merge_reasons(rs))) for run_dir, rs in reasons.items()]

    def varying_row_fields(self) -> List[str]:
        """Row fields worth a column: always the first four, arch/dataset only when they differ."""
        fields_ = ["method", "policy", "proposals", "epochs"]
        for extra in ("arch", "dataset"):
            if len({getattr(r, extra) for r in self.rows}) > 1:
                fields_.append(extra)
        return fields_

    def has_probe(self) -> bool:
        return any(c.task == "probe" for c in self.columns)

    def probe_protocols(self, row: RowKey) -> str:
        """The protocol(s) of the probe numbers in a row (", "-joined; "" when it has none)."""
        protocols = {c.probe_protocol for c in self.columns
                     if c.task == "probe" and (row, c) in self.cells
                     and (self.cells[(row, c)].values or self.cells[(row, c)].flags)}
        return ", ".join(sorted(protocols))

    def columns_needing_dataset(self) -> set:
        """Tasks measured on more than one dataset get the dataset in their header."""
        datasets: Dict[str, set] = {}
        for c in self.columns:
            datasets.setdefault(c.task, set()).add(c.dataset)
        return {task for task, ds in datasets.items() if len(ds) > 1}


def _merge_reasons(reasons: List[str]) -> List[str]:
    """"COCO box AP is null", "COCO box AP50 is null" -> "COCO box AP, COCO box AP50 are null"."""
    by_value: Dict[str, List[str]] = {}
    other = []
    for r in reasons:
        if " is " in r and not r.startswith(("status", "pretraining", "unreadable")):
            what, value = r.rsplit(" is ", 1)
            by_value.setdefault(value, []).append(what)
        else:
            other.append(r)
    merged = [f"{whats[0]} is {v}" if len(whats) == 1 else f"{', '.join(whats)} are {v}"
              for v, whats in by_value.items()]
    return other + merged


# How a run names shared copy-paste in its policy (objcrop.pretrain.engine.results.view_policy: `+copy-paste`
# for VIEWS.COPY_PASTE.MODE shared, `+copy-paste-<mode>` for any other mode), and how a report row shows it:
# one paste draw for both views, on the same background, is not DiLo's method (docs/fidelity.md §1).
SHARED_COPY_PASTE = "+copy-paste"
SHARED_COPY_PASTE_SHOWN = "+copy-paste-shared"


def policy_shown(prov: Provenance) -> str:
    """The policy as a report row shows it: `Provenance.policy_label` (a run tag joins the policy), with the
    shared copy-paste variant named as such (`obj-obj-dilate+copy-paste-shared`) beside DiLo's per-view mode
    (`+copy-paste-dilo`). Run names keep `+copy-paste`: only the label changes."""
    policy = prov.policy
    if policy.endswith(SHARED_COPY_PASTE):
        policy += SHARED_COPY_PASTE_SHOWN[len(SHARED_COPY_PASTE):]
    return f"{policy}-{prov.tag}" if prov.tag else policy


def row_key(pretrain: Any) -> RowKey:
    """The row of a run from its results.json "pretrain" block (None -> an 'unknown' row). The
    policy is `policy_shown`: a run tag, stored on its own or (records of schema 0)
    already joined to the policy, gives the same row."""
    block = pretrain if isinstance(pretrain, dict) else {}
    prov = Provenance.from_dict(block)
    reference = prov.is_reference
    return RowKey(
        method=prov.method if block.get("method") else "unknown",
        policy=policy_shown(prov) if block.get("policy") else ("—" if reference else "random"),
        proposals=prov.proposals if block.get("proposals") else ("—" if reference else "none"),
        epochs=None if reference and prov.epochs in (None, 0) else prov.epochs,
        arch=prov.arch_label if block.get("arch") else "",  # a CIFAR-stem run gets its own row
        dataset=dataset_label(block.get("dataset")),
    )


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _failure_reason(result: Dict[str, Any]) -> Optional[str]:
    status = result.get("status", "ok")
    if status != "ok":
        detail = result.get("error") or result.get("message")
        return f"status {status}" + (f": {detail}" if detail else "")
    return None


@dataclass(frozen=True)
class PlainBudget:
    """The fine-tuning budget whose columns keep the plain header: the one of a task's fine-tunings that
    trained on the most images (its results.json's iterations and images per batch; None: written
    before results said their batch)."""
    iterations: int
    ims_per_batch: Optional[int] = None

    @property
    def images(self) -> int:
        return self.iterations * (self.ims_per_batch or 1)

    def column_budget(self, result: Dict[str, Any]) -> int:
        """0 when the detection `result` trained on this budget's images (within one batch: the linear
        scaling rule on another world size, as report.record.same_budget counts it); else its length in
        iterations of this budget's batch, the `[N it]` of its own columns. Where either side does not
        say its batch, the same batch is assumed and iterations are compared."""
        its, ims = result.get("iterations"), result.get("ims_per_batch")
        if not is_count(its):
            return 0
        if not (self.ims_per_batch and is_count(ims)):
            return 0 if its == self.iterations else its
        if same_images_seen(its, ims, self.iterations, self.ims_per_batch):
            return 0
        return max(1, round(its * ims / self.ims_per_batch))


def detection_task(result: Dict[str, Any]) -> str:
    """The task a detection results.json names ("unknown_det" when it names none)."""
    return str(result.get("task") or "unknown_det")


def column_budget(task: str, result: Dict[str, Any], budgets: Optional[Dict[str, PlainBudget]]) -> int:
    """The `budget` of the columns a `task` result lands in: 0 for its table's plain budget (or where the
    table has none for the task), else its own length (PlainBudget.column_budget)."""
    plain = (budgets or {}).get(task)
    return plain.column_budget(result) if plain else 0


def detection_budgets(results: Iterable[Dict[str, Any]]) -> Dict[str, PlainBudget]:
    """Detection task -> its plain budget among `results`: the fine-tuning that trained on the most images."""
    out: Dict[str, PlainBudget] = {}
    for result in results:
        its, ims = result.get("iterations"), result.get("ims_per_batch")
        if result.get("stage") != "detection" or not is_count(its):
            continue
        ran = PlainBudget(its, ims if is_count(ims) and ims > 0 else None)
        task = detection_task(result)
        if task not in out or ran.images > out[task].images:
            out[task] = ran
    return out


def mixed_schedule_flags(runs: Iterable[Tuple[Dict[str, Any], Optional[Dict[str, Any]], str]],
                         budgets: Dict[str, PlainBudget]) -> List[Flag]:
    """Flags for the fine-tunings whose schedule is not their column's: (results.json, the SOLVER it ran,
    run dir) of each run; `budgets`: the table's (detection_budgets). Columns are split by length, not by
    learning rate, steps or warmup; a column whose runs differ there holds two experiments, so every run
    off the schedule most of its column share is named (objcrop.report.record.same_schedule: equal under
    the linear scaling rule)."""
    columns: Dict[Tuple[str, str, Any], List[Tuple[Dict[str, Any], Dict[str, Any], str]]] = {}
    for result, solver, run_dir in runs:
        if result.get("stage") != "detection" or _failure_reason(result):
            continue
        try:
            ran = planned_budget(solver)
        except (KeyError, TypeError, ValueError):
            continue  # no recorded config: the schedule cannot be told
        task = detection_task(result)
        key = (task, str(result.get("dataset")), column_budget(task, result, budgets))
        columns.setdefault(key, []).append((ran, solver, run_dir))
    flags = []
    for column in columns.values():
        sharing = [sum(same_schedule(solver, ran) for _, solver, _ in column) for ran, _, _ in column]
        usual = column[sharing.index(max(sharing))][0]
        flags += [Flag(run_dir, f"fine-tuned at {budget_words(ran)}, while most runs of its column ran "
                                f"{budget_words(usual)}: another experiment in the same cells")
                  for ran, solver, run_dir in column if not same_schedule(solver, usual)]
    return flags


def measurements_of(result: Dict[str, Any], run_dir: str,
                    budgets: Optional[Dict[str, PlainBudget]] = None) -> List[Measurement]:
    """The cells one probe/detection results.json contributes to (pretraining runs: none); `budgets`
    (detection_budgets of the table): a detection run of another budget gets columns of its own."""
    stage = result.get("stage")
    if stage == "probe":
        task = "probe"
    elif stage == "detection":
        task = detection_task(result)
    else:
        return []
    row = row_key(result.get("pretrain"))
    dataset = dataset_label(result.get("dataset"))
    protocol = protocol_of(result) if task == "probe" else ""
    if protocol == DEFAULT_PROBE_PROTOCOL:
        protocol = ""
    budget = column_budget(task, result, budgets) if task != "probe" else 0
    failure = _failure_reason(result)
    metrics = TASKS.get(task, (task, []))[1]
    if not metrics:  # an unknown detection task: show whatever box/mask numbers it has
        metrics = [(s, m) for s in ("box", "mask") for m in sorted(result.get(s) or {})]
    out = []
    for section, metric in metrics:
        column = Column(task, section, metric, dataset, protocol, budget)
        source = result.get(section) if section else result
        present = isinstance(source, dict) and metric in source
        if failure:
            if present or section in ("", "box"):  # one flag per failed run's main columns is enough
                out.append(Measurement(row, column, None, run_dir, Flag(run_dir, failure)))
            continue
        if not present:
            continue  # e.g. no kNN score, no mask AP on a box-only run: a missing cell, not a failure
        value = source[metric]
        if not _finite(value):  # NaN/inf, or null (how a NaN survives json.dumps in some writers)
            label = column.header()
            shown = "null (no valid score, e.g. no detections)" if value is None else str(value)
            out.append(Measurement(row, column, None, run_dir, Flag(run_dir, f"{label} is {shown}")))
            continue
        scale = PERCENT_SCALE.get(task, 1.0)
        out.append(Measurement(row, column, float(value) * scale, run_dir))
    return out


def protocol_of(result: Dict[str, Any]) -> str:
    """The protocol a probe results.json was produced by (DEFAULT_PROBE_PROTOCOL when it names none)."""
    return str(result.get("protocol") or DEFAULT_PROBE_PROTOCOL)


def pretrain_flag(result: Dict[str, Any], run_dir: str) -> Optional[Flag]:
    """A failed pretraining run, or one whose final loss is not finite, flags its row."""
    failure = _failure_reason(result)
    if failure:
        return Flag(run_dir, f"pretraining {failure}")
    loss = result.get("final_loss")
    if loss is not None and not _finite(loss):
        return Flag(run_dir, f"pretraining final loss is {loss}")
    return None


def _row_sort_key(row: RowKey):
    method = METHOD_ORDER.index(row.method) if row.method in METHOD_ORDER else len(METHOD_ORDER)
    return (
        method, row.method, row.arch, row.dataset,
        -1 if row.epochs is None else row.epochs,
        0 if row.policy == BASELINE_POLICY else 1, row.policy, row.proposals,
    )


def find_baselines(rows: List[RowKey]) -> Dict[RowKey, RowKey]:
    """row -> the random-crop row it is read against (report/baseline.py): same method, epochs,
    architecture and data, and for a tagged row the random-crop row with the same tag if any."""
    by_setting: Dict[tuple, Dict[str, RowKey]] = {}
    for r in sorted(rows, key=lambda r: r.proposals != "none"):  # a random-crop row has no proposals
        by_setting.setdefault((r.method, r.epochs, r.arch, r.dataset), {}).setdefault(r.policy, r)
    out = {}
    for r in rows:
        setting = by_setting[(r.method, r.epochs, r.arch, r.dataset)]
        policy = baseline_policy(r.policy, setting)
        if policy is not None and setting[policy] != r:
            out[r] = setting[policy]
    return out


def build_table(results: List[Tuple[Dict[str, Any], str]], extra_flags: Optional[List[Flag]] = None,
                budgets: Optional[Dict[str, PlainBudget]] = None) -> Table:
    """Aggregate (results.json content, run dir) pairs into a Table with Δ and best marks; `budgets`:
    the detection budgets that keep the plain headers (by default the largest of these results)."""
    cells: Dict[Tuple[RowKey, Column], Cell] = {}
    row_flags: Dict[RowKey, List[Flag]] = {}
    rows, columns = set(), set()
    budgets = detection_budgets(result for result, _ in results) if budgets is None else budgets
    for result, run_dir in results:
        if result.get("stage") == "pretrain":
            row = row_key(result.get("pretrain"))
            rows.add(row)
            flag = pretrain_flag(result, run_dir)
            if flag:
                row_flags.setdefault(row, []).append(flag)
            continue
        for m in measurements_of(result, run_dir, budgets):
            rows.add(m.row)
            columns.add(m.column)
            cell = cells.setdefault((m.row, m.column), Cell())
            if m.value is not None:
                cell.values.append(m.value)
            if m.flag is not None:
                cell.flags.append(m.flag)
    table = Table(
        rows=sorted(rows, key=_row_sort_key),
        columns=sorted(columns, key=Column.sort_key),
        cells=cells,
        row_flags=row_flags,
        baselines={},
        extra_flags=list(extra_flags or []),
    )
    table.baselines = find_baselines(table.rows)
    _fill_deltas(table)
    _fill_gaps(table)
    _mark_best(table)
    return table


def _fill_deltas(table: Table) -> None:
    for row, base in table.baselines.items():
        for col in table.columns:
            cell, base_cell = table.cells.get((row, col)), table.cells.get((base, col))
            if cell and base_cell and cell.mean is not None and base_cell.mean is not None:
                cell.delta = cell.mean - base_cell.mean


# Every column is in % (probe mAP, AP): references closer than a point give no scale to read a row
# on (a demo's supervised row 0.1 above scratch made a row "+11,000 %").
MIN_GAP_SPAN = 1.0


def gap_closed(value: float, low: float, high: float, noise: float = 0.0) -> Optional[float]:
    """(value − low) / (high − low) in %: 0 at the random-init row, 100 at the supervised row.
    None unless supervised beats random init by more than MIN_GAP_SPAN and the references' `noise`
    (their larger std): without that there is no scale to read a row on."""
    span = high - low
    if span <= max(MIN_GAP_SPAN, noise):
        return None
    return 100.0 * (value - low) / span


def reference_rows(table: Table, row: RowKey) -> Optional[Tuple[RowKey, RowKey]]:
    """(random_init row, supervised row) a method row is read against: the references of its own
    architecture (a ResNet-18 row is not placed between ResNet-50 references); None when either is
    missing or ambiguous."""
    found = []
    for method in (GAP_LOW, GAP_HIGH):
        refs = [r for r in table.rows if r.method == method and r.arch == row.arch]
        if len(refs) != 1:
            return None
        found.append(refs[0])
    return found[0], found[1]


def _fill_gaps(table: Table) -> None:
    """Each cell against the references' cells of the same column (a detection column's random_init
    cell is the from-scratch fine-tuning, never the probe's random init)."""
    for row in table.rows:
        if Provenance(method=row.method).is_reference:
            continue
        refs = reference_rows(table, row)
        if refs is None:
            continue
        for col in table.columns:
            cell, low, high = table.cells.get((row, col)), table.cells.get((refs[0], col)), table.cells.get((refs[1], col))
            if cell and low and high and None not in (cell.mean, low.mean, high.mean):
                cell.gap = gap_closed(cell.mean, low.mean, high.mean, max(low.std or 0.0, high.std or 0.0))


def _mark_best(table: Table) -> None:
    """Higher is better for every metric here; ties are all marked.

    A lone value, or a column where all values are equal, has no best.
    """
    for col in table.columns:
        filled = [table.cells[(r, col)] for r in table.rows
                  if (r, col) in table.cells and table.cells[(r, col)].mean is not None]
        if len(filled) < 2:
            continue
        top = max(c.mean for c in filled)
        if all(math.isclose(c.mean, top, rel_tol=0, abs_tol=1e-9) for c in filled):
            continue  # everyone equal (e.g. all 0 AP): there is no best
        for c in filled:
            c.best = math.isclose(c.mean, top, rel_tol=0, abs_tol=1e-9)


def probe_over_epochs(table: Table) -> Dict[Tuple[str, str, str, str, str], Dict[Column, List[Tuple[int, float, Optional[float], int]]]]:
    """For settings pretrained for several epoch counts: probe (epochs, mean, std, n) series.

    Keyed by (method, policy, proposals, arch, dataset); only settings with ≥ 2 epoch counts.
    """
    series: Dict[Tuple[str, str, str, str, str], Dict[Column, List]] = {}
    for col in table.columns:
        if col.task != "probe":
            continue
        for row in table.rows:
            cell = table.cells.get((row, col))
            if row.epochs is None or cell is None or cell.mean is None:
                continue
            key = (row.method, row.policy, row.proposals, row.arch, row.dataset)
            series.setdefault(key, {}).setdefault(col, []).append((row.epochs, cell.mean, cell.std, cell.n))
    return {
        key: {col: sorted(points) for col, points in cols.items() if len(points) >= 2}
        for key, cols in series.items()
        if any(len(p) >= 2 for p in cols.values())
    }
