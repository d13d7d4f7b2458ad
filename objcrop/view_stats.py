"""The table of `objcrop views stats` (what sampled view pairs hold of the objects), in one place:
the command prints it and the study page (`objcrop report study`) rebuilds it from the command's
`--json` files. It lives in the core because the report reads files and imports no stage."""
from typing import Dict


def format_view_stats(rows: Dict[str, Dict[str, float]]) -> str:
    """A markdown table, one row per (policy, boxes) label, of `objcrop views stats` numbers."""
    lines = ["| policy (boxes) | view 1 holds ≥50 % of an object | view 2 holds ≥50 % | both views: same object "
             "| object cover view 1 | object cover view 2 | pairs |",
             "|---|---|---|---|---|---|---|"]
    for label, s in rows.items():
        lines.append(f"| {label} | {s['view1_holds_half_object']:.3f} | {s['view2_holds_half_object']:.3f} | "
                     f"{s['pair_same_object']:.3f} | {s['view1_object_cover']:.3f} | {s['view2_object_cover']:.3f} | "
                     f"{s['pairs']} |")
    return "\n".join(lines)
