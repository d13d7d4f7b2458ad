"""scripts/proposal_choice.py: the rule that picks issue 20's ranked proposal store, and its table."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import proposal_choice  # noqa: E402


def _stats(recall, on_object):
    return {"top": {"recall@0.5": recall, "on_object@0.5": on_object}}


def test_the_rule_ranks_by_top_k_recall_then_by_the_share_on_objects():
    stats = {"a": _stats(0.6, 0.9), "b": _stats(0.7, 0.1), "c": _stats(0.7, 0.2)}
    assert proposal_choice.chosen(stats) == "c"  # b and c tie on recall: c covers objects more often
    stats["d"] = _stats(0.65, 1.0)
    assert proposal_choice.chosen(stats) == "c"  # on-object decides ties only


def test_a_run_writes_the_table_with_the_chosen_method_and_its_commands(tmp_path):
    from objcrop.datasets.synth import generate

    generate(str(tmp_path / "data"), num_images=16, seed=0, variant="study")
    out = tmp_path / "choice.md"
    methods = ["saliency-spectral", "saliency-fine-grained"]
    assert proposal_choice.main([str(tmp_path), "--out", str(out), "--workers", "1", "--methods", *methods]) == 0
    text = out.read_text()
    assert text.count("(chosen)") == 1 and "BING (the paper's method) is not a candidate" in text
    for m in methods:
        assert os.path.isfile(tmp_path / "proposal_choice" / f"{m}.stats_top10.json")
        assert f"objcrop proposals compute --method {m}" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    recalls = [float(r.split("|")[3]) for r in rows]
    assert recalls == sorted(recalls, reverse=True) and "(chosen)" in rows[0]


def test_a_folder_without_data_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        proposal_choice.main([str(tmp_path), "--out", str(tmp_path / "x.md")])
