"""Render a `Table` as Markdown, CSV and LaTeX (booktabs).

All three show the same numbers: mean ± sample std over runs, n, Δ against the
random-crop baseline of the same method and epochs, the gap closed between the reference
rows (random init 0 %, supervised 100 %), the probe protocol of each row's probe numbers, the
best of each column marked,
'—' for a missing cell and '†' on anything a failed or NaN run touched, with the
run directories listed under the table.
"""
import csv
import io
from typing import List, Optional

from objcrop.report.aggregate import BASELINE_POLICY, Cell, Column, RowKey, Table

MISSING = "—"
DAGGER = "†"
ROW_FIELD_HEADERS = {
    "method": "method", "policy": "view policy", "proposals": "proposals",
    "epochs": "epochs", "arch": "arch", "dataset": "pretrain data",
}
PROTOCOL_HEADER = "probe protocol"


def _num(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


def _signed(x: float, decimals: int) -> str:
    return f"{x:+.{decimals}f}"


def _row_value(row: RowKey, name: str) -> str:
    value = getattr(row, name)
    return MISSING if value in (None, "") else str(value)


def _row_headers(table: Table, fields_: List[str]) -> List[str]:
    """The row fields' headers, then the probe protocol where the table has probe columns."""
    return [ROW_FIELD_HEADERS[f] for f in fields_] + ([PROTOCOL_HEADER] if table.has_probe() else [])


def _row_names(table: Table, row: RowKey, fields_: List[str]) -> List[str]:
    """A row's fields as shown, then the protocol(s) its probe numbers come from."""
    names = [_row_value(row, f) for f in fields_]
    if table.has_probe():
        names.append(table.probe_protocols(row) or MISSING)
    return names


def _header(table: Table, col: Column) -> str:
    return col.header(with_dataset=col.task in table.columns_needing_dataset())


def _gap(x: float) -> str:
    return f"{x:.0f}%"


def _row_flagged(table: Table, row: RowKey) -> bool:
    return bool(table.row_flags.get(row))


# ---------------------------------------------------------------- Markdown

def _md_cell(cell: Cell, decimals: int) -> str:
    if cell.mean is None:
        text = MISSING
    else:
        mean = _num(cell.mean, decimals)
        text = f"**{mean}**" if cell.best else mean
        if cell.std is not None:
            text += f" ± {_num(cell.std, decimals)}"
        extras = [f"n={cell.n}"]
        if cell.delta is not None:
            extras.append(f"Δ {_signed(cell.delta, decimals)}")
        if cell.gap is not None:
            extras.append(f"gap {_gap(cell.gap)}")
        text += f" ({', '.join(extras)})"
    return text + (f" {DAGGER}" if cell.flags else "")


def to_markdown(table: Table, decimals: int = 1, title: Optional[str] = None, preamble: str = "") -> str:
    fields_ = table.varying_row_fields()
    headers = _row_headers(table, fields_) + [_header(table, c) for c in table.columns]
    lines = []
    if title:
        lines += [f"# {title}", ""]
    if preamble:
        lines += [preamble.rstrip(), ""]
    if not table.rows:
        lines.append("No results.json files were found.")
        return "\n".join(lines) + "\n"
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join(["---"] * (len(headers) - len(table.columns)) + ["---:"] * len(table.columns)) + "|")
    for row in table.rows:
        names = _row_names(table, row, fields_)
        if _row_flagged(table, row):
            names[0] += f" {DAGGER}"
        cells = [_md_cell(table.cell(row, c), decimals) for c in table.columns]
        lines.append("| " + " | ".join(names + cells) + " |")
    lines += ["", legend(table, decimals)]
    flags = table.all_flags()
    if flags:
        lines += ["", f"{DAGGER} Flagged runs (failed, or a metric that is NaN/inf; not in any mean):", ""]
        lines += [f"- `{f.run_dir}`: {f.reason}" for f in flags]
    return "\n".join(lines) + "\n"


def legend(table: Table, decimals: int) -> str:
    has_std = any(c.std is not None for c in table.cells.values())
    parts = ["Cells: mean" + (" ± sample std" if has_std else "") + " over n runs "
             "(pretraining seeds × fine-tuning seeds); probe mAP and AP in %."]
    if table.baselines:
        parts.append(f"Δ: difference to the `{BASELINE_POLICY}`-crop row of the same method, epochs and data.")
        tagged = sorted({b.policy for b in table.baselines.values() if b.policy != BASELINE_POLICY})
        if tagged:  # report/baseline.py: a tagged row against the random crops with its tag
            parts.append("A tagged row is read against the random-crop row with its tag ("
                         + ", ".join(f"`{p}`" for p in tagged) + ").")
    methods = {r.method for r in table.rows}
    if "random_init" in methods:
        parts.append("Reference rows first: `random_init` is a random backbone for the probe and fine-tuning from "
                     "scratch (same config, every layer trained) for detection"
                     + ("; `supervised` a backbone trained with labels." if "supervised" in methods else "."))
    if any(c.gap is not None for c in table.cells.values()):
        parts.append("gap: the share of the distance from the `random_init` row (0 %) to the `supervised` row "
                     "(100 %) that a row covers, (row − random_init) / (supervised − random_init) of the same "
                     "column and architecture.")
    if table.has_probe():
        parts.append("probe protocol: `cached_features` is objcrop's fast probe (a linear layer on cached "
                     "whole-image features; not the paper's protocol), `main_lincls` the paper's (main_lincls.py: "
                     "augmented views through the frozen backbone; its columns are marked [main_lincls], and "
                     "mAP batch mean is the released per-batch figure beside its whole-test-set mAP).")
    parts.append("Bold: best mean of the column. " + MISSING + ": not run.")
    return " ".join(parts)


# ---------------------------------------------------------------- CSV

def to_csv(table: Table) -> str:
    """One line per row; per column: mean, std, n, delta, gap closed (%), best, flagged (machine-readable, unrounded)."""
    fields_ = ["method", "policy", "proposals", "epochs", "arch", "dataset"]
    header = list(fields_) + ["probe_protocol", "row_flagged"]
    for col in table.columns:
        name = _header(table, col)
        header += [f"{name} mean", f"{name} std", f"{name} n", f"{name} delta", f"{name} gap closed %",
                   f"{name} best", f"{name} flagged"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        line: List[object] = ["" if getattr(row, f) is None else getattr(row, f) for f in fields_]
        line += [table.probe_protocols(row), int(_row_flagged(table, row))]
        for col in table.columns:
            cell = table.cell(row, col)
            line += [
                "" if cell.mean is None else repr(cell.mean),
                "" if cell.std is None else repr(cell.std),
                cell.n,
                "" if cell.delta is None else repr(cell.delta),
                "" if cell.gap is None else repr(cell.gap),
                int(cell.best),
                len(cell.flags),
            ]
        writer.writerow(line)
    return buf.getvalue()


# ---------------------------------------------------------------- LaTeX

_TEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                "Δ": r"$\Delta$", "±": r"$\pm$", "—": "--", "×": r"$\times$"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _tex_cell(cell: Cell, decimals: int) -> str:
    if cell.mean is None:
        text = "--"
    else:
        mean = _num(cell.mean, decimals)
        text = rf"\textbf{{{mean}}}" if cell.best else mean
        if cell.std is not None:
            text += rf"\,{{\scriptsize$\pm${_num(cell.std, decimals)}}}"
        extras = [f"n={cell.n}"] + ([rf"$\Delta${_signed(cell.delta, decimals)}"] if cell.delta is not None else [])
        extras += [f"gap {tex_escape(_gap(cell.gap))}"] if cell.gap is not None else []
        text += rf" {{\scriptsize({', '.join(extras)})}}"
    return text + (r"$^\dagger$" if cell.flags else "")


def to_latex(table: Table, decimals: int = 1, caption: str = "") -> str:
    fields_ = table.varying_row_fields()
    lines = [
        "% Generated by `objcrop report`; needs \\usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{" + "l" * len(_row_headers(table, fields_)) + "r" * len(table.columns) + "}",
        r"\toprule",
        " & ".join([tex_escape(h) for h in _row_headers(table, fields_)]
                   + [tex_escape(_header(table, c)) for c in table.columns]) + r" \\",
        r"\midrule",
    ]
    previous_method = None
    for row in table.rows:
        if previous_method is not None and row.method != previous_method:
            lines.append(r"\midrule")
        previous_method = row.method
        names = [tex_escape(n) for n in _row_names(table, row, fields_)]
        if _row_flagged(table, row):
            names[0] += r"$^\dagger$"
        cells = [_tex_cell(table.cell(row, c), decimals) for c in table.columns]
        lines.append(" & ".join(names + cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = [tex_escape(legend(table, decimals).replace("`", ""))]
    flags = table.all_flags()
    if flags:
        notes.append(r"$^\dagger$ flagged runs, not in any mean: "
                     + "; ".join(r"\texttt{" + tex_escape(f.run_dir) + "} (" + tex_escape(f.reason) + ")"
                                 for f in flags) + ".")
    lines.append(r"\caption{" + (tex_escape(caption) + " " if caption else "") + " ".join(notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
