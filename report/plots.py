"""PNG plots of a report (matplotlib, Agg backend: no display needed).

* `bars.png`: one panel per benchmark column, one bar per row, error bars = sample std.
* `loss_curves.png`: each pretraining run's loss from its metrics.jsonl.
* `detection_curves.png`: each detection fine-tuning's total loss, one panel per task.
* `probe_over_epochs.png`: probe mAP against pretraining epochs, where a setting has several.
* `plot_budget_sweep` (the study page's, not the report's): each textured variant's random-crop
  settings by epochs against its random-init band and the amendment's threshold (report/prereg.py).
* `plot_budget_curve` (the study page's too): random crops and Obj-Obj+Dilate by epochs in the
  amendment's recipe, against the random-init band (report/budget_curve.py).
"""
import os
from typing import Dict, List, Tuple

from objcrop.io import atomic_path
from objcrop.report.aggregate import RowKey, Table, probe_over_epochs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def row_label(row: RowKey) -> str:
    parts = [row.method]
    if row.policy not in ("—", ""):
        parts.append(row.policy)
    if row.proposals not in ("—", "", "none"):
        parts.append(f"({row.proposals})")
    if row.epochs is not None:
        parts.append(f"{row.epochs}ep")
    return " ".join(parts)


def _save(fig, path: str) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


_PALETTE = ["#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _colours(keys: List[str]) -> Dict[str, str]:
    return {k: _PALETTE[i % len(_PALETTE)] for i, k in enumerate(keys)}


def _policy_colours(rows: List[RowKey]) -> Dict[str, str]:
    return _colours(sorted({r.policy for r in rows}, key=lambda p: (p != "random", p)))


def plot_bars(table: Table, path: str) -> str:
    """One panel per benchmark column; rows without a value are left out of that panel."""
    plt = _pyplot()
    cols = table.columns
    ncols = min(3, max(1, len(cols)))
    nrows = max(1, (len(cols) + ncols - 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 0.35 * len(table.rows) + 2.4 * nrows), squeeze=False)
    colours = _policy_colours(table.rows)
    needs_dataset = table.columns_needing_dataset()
    for ax, col in zip(axes.flat, cols):
        rows = [r for r in table.rows if table.cell(r, col).mean is not None]
        means = [table.cell(r, col).mean for r in rows]
        errs = [table.cell(r, col).std or 0.0 for r in rows]
        ax.barh(range(len(rows)), means, xerr=errs, capsize=3, color=[colours[r.policy] for r in rows])
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([row_label(r) + (" †" if table.cell(r, col).flags else "") for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(col.header(with_dataset=col.task in needs_dataset), fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        if means:  # bars start at 0: a truncated axis would exaggerate differences within seed noise
            hi = max(m + e for m, e in zip(means, errs))
            ax.set_xlim(min(0.0, min(means)), max(hi * 1.25, 1.0))  # all in %, so ≥ 1 keeps 0-AP panels readable
            for y, (m, e) in enumerate(zip(means, errs)):
                ax.text(m + e, y, f" {m:.1f}", va="center", fontsize=7)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    fig.suptitle("mean ± sample std over runs", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_loss_curves(curves: List[Tuple[RowKey, str, List[float], List[float]]], path: str) -> str:
    """curves: (row, run label, iterations, losses) per pretraining run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = _policy_colours([c[0] for c in curves])
    labelled = set()
    for row, label, its, losses in curves:
        name = row_label(row)
        ax.plot(its, losses, color=colours[row.policy], alpha=0.75, lw=1.2,
                label=name if name not in labelled else None)
        labelled.add(name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("pretraining loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("pretraining loss (one line per run)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_detection_curves(curves: List[Tuple[str, RowKey, str, List[float], List[float]]], path: str) -> str:
    """curves: (task, row, run label, iterations, total losses) per fine-tuning. One panel per task and
    one colour per row, so the fine-tunings of one backbone lie side by side: a run that leaves its
    siblings' path (a spike, a plateau) shows where its final AP alone would read as seed noise."""
    plt = _pyplot()
    from matplotlib.transforms import offset_copy

    tasks = sorted({c[0] for c in curves})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 4.2), squeeze=False)
    colours = _colours(sorted({row_label(c[1]) for c in curves}))  # by row: supervised and scratch share a policy
    for ax, task in zip(axes[0], tasks):
        labelled = set()
        runs = sorted((c for c in curves if c[0] == task), key=lambda c: (row_label(c[1]), c[2]))
        # fine-tunings of one backbone end at nearly the same loss: their end labels are spread apart
        ends = [c[4][-1] for c in runs]
        span = max(max(c[4]) for c in runs) - min(min(c[4]) for c in runs)
        label_ys = spread(ends, 0.04 * span)
        beside = offset_copy(ax.transData, fig=fig, x=3, units="points")
        for (_, row, label, its, losses), label_y in zip(runs, label_ys):
            name = row_label(row)
            ax.plot(its, losses, color=colours[name], alpha=0.75, lw=1.2, label=name if name not in labelled else None)
            ax.text(its[-1], label_y, label, fontsize=6, color=colours[name], va="center", transform=beside)
            labelled.add(name)
        ax.set_xlabel("iteration")
        ax.set_ylabel("total training loss")
        ax.set_title(f"{task}: fine-tuning loss (one line per fine-tuning)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def spread(values: List[float], gap: float) -> List[float]:
    """Heights for labels that belong at `values` (returned in their order), any two at least `gap` apart:
    labels closer than that are stacked `gap` apart around the mean of their values, groups merging until
    none overlaps the next."""
    def ends(group: List[int]) -> Tuple[float, float]:
        centre = sum(values[i] for i in group) / len(group)
        half = (len(group) - 1) / 2 * gap
        return centre - half, centre + half

    groups: List[List[int]] = []
    for i in sorted(range(len(values)), key=values.__getitem__):
        groups.append([i])
        while len(groups) > 1 and ends(groups[-1])[0] - ends(groups[-2])[1] < gap:
            groups[-2:] = [groups[-2] + groups[-1]]
    out = list(values)
    for group in groups:
        bottom = ends(group)[0]
        for k, i in enumerate(group):
            out[i] = bottom + k * gap
    return out


def plot_probe_over_epochs(table: Table, path: str) -> str:
    plt = _pyplot()
    series = probe_over_epochs(table)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (method, policy, proposals, arch, dataset), cols in sorted(series.items()):
        for col, points in cols.items():
            epochs = [p[0] for p in points]
            means = [p[1] for p in points]
            stds = [p[2] or 0.0 for p in points]
            label = " ".join(x for x in (method, policy, proposals if proposals != "none" else "", col.header()) if x)
            ax.errorbar(epochs, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xlabel("pretraining epochs")
    ax.set_ylabel("probe (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def write_plots(table: Table, curves, out_dir: str, detection_curves=()) -> List[str]:
    """Write every plot that has data; return the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if table.columns and table.rows:
        written.append(plot_bars(table, os.path.join(out_dir, "bars.png")))
    if curves:
        written.append(plot_loss_curves(curves, os.path.join(out_dir, "loss_curves.png")))
    if detection_curves:
        written.append(plot_detection_curves(detection_curves, os.path.join(out_dir, "detection_curves.png")))
    if probe_over_epochs(table):
        written.append(plot_probe_over_epochs(table, os.path.join(out_dir, "probe_over_epochs.png")))
    return written


def _random_init_band(ax, ref: List[float]) -> float:
    """The random-init probe's mean ± 2 std as a grey band on an epochs panel; returns the mean."""
    import statistics

    mean = statistics.mean(ref)
    spread = 2 * statistics.stdev(ref) if len(ref) > 1 else 0.0
    ax.axhspan(mean - spread, mean + spread, color="#cccccc", alpha=0.6, label="random init, mean ± 2 std")
    return mean


def _finish_epochs_panel(ax, title: str) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("pretraining epochs (log)")
    ax.set_ylabel("probe mAP (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def plot_budget_sweep(panels: List[Tuple[str, List[dict], List[float], float]], path: str) -> str:
    """One panel per variant (name, sweep rows of report/prereg.sweep_rows, random-init probe values,
    the smallest effect of interest): every seed's probe mAP at its epochs, the settings that meet the
    amendment's rule filled, the random-init mean ± 2 std as a band and mean + smallest effect as a line."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    for ax, (name, rows, ref, effect) in zip(axes[0], panels):
        mean = _random_init_band(ax, ref)
        ax.axhline(mean + effect, color="#d62728", ls="--", lw=1, label=f"random init + {effect:g} (the rule)")
        for r in rows:
            x = int(r["epochs"])
            ax.scatter([x] * len(r["values"]), r["values"], s=18, color="#1f77b4",
                       facecolors="#1f77b4" if r["meets"] else "none")
            ax.annotate(r["policy"], (x, max(r["values"])), fontsize=6, rotation=45, xytext=(2, 4),
                        textcoords="offset points")
        _finish_epochs_panel(ax, f"{name}: MoCo-v2, random crops")
    fig.tight_layout()
    return _save(fig, path)


def plot_budget_curve(panels: List[Tuple[str, List[dict], List[float]]], path: str) -> str:
    """One panel per variant (report/budget_curve.panels: name, budget rows, random-init probe values):
    every seed's probe mAP of each policy at its epochs, the means joined, and the random-init mean
    ± 2 std as a band."""
    import statistics

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    arms = (("base", "random crops", "#7f7f7f", -0.015), ("obj", "Obj-Obj+Dilate (gt)", "#1f77b4", 0.015))
    for ax, (name, rows, ref) in zip(axes[0], panels):
        _random_init_band(ax, ref)
        for field, label, colour, shift in arms:
            points = [(int(r["epochs"]), r[field]) for r in rows if r[field]]
            # a small shift on the log axis keeps the two policies' seeds apart at one budget
            for x, run in points:
                ax.scatter([x * 10 ** shift] * len(run), run, s=14, color=colour, alpha=0.6)
            ax.plot([x * 10 ** shift for x, _ in points], [statistics.mean(run) for _, run in points],
                    color=colour, marker="o", lw=1.5, label=f"{label}, mean")
        _finish_epochs_panel(ax, f"{name}: MoCo-v2, budget curve")
        budgets = sorted({int(r["epochs"]) for r in rows})
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
    fig.tight_layout()
    return _save(fig, path)
