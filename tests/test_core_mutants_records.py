"""objcrop/records.py: provenance blocks, dataset names and results.json validation, pinned where mutation
testing (benchmarks/mutation.md) found a changed line that no test noticed. Pure and fast."""
import json
import os

import pytest

from objcrop.records import (REQUIRED_FIELDS, RecordError, SCHEMA_VERSION, STAGES, STATUSES, Provenance, dataset_label,
                             dataset_tag, provenance_of, results, split_dataset_spec, validate_results,
                             write_results)


def test_from_dict_reads_every_field_by_its_name_and_types_it():
    """Guards against a provenance field read under the wrong key (its row would say 'unknown') or left
    untyped: epochs and seed as ints (a string '100' compared unequal to 100 and split the report's rows),
    the names as strings."""
    block = {"method": "moco_v2", "policy": "obj-obj", "proposals": "gt", "epochs": "100", "arch": 18,
             "dataset": "synth:/d:train", "seed": "3", "tag": 7, "not_a_field": 1}
    assert Provenance.from_dict(block) == Provenance("moco_v2", "obj-obj", "gt", 100, "18", "synth:/d:train", 3, "7")
    numbers = Provenance.from_dict({"method": 1, "policy": 2, "proposals": 3, "dataset": 4})
    assert (numbers.method, numbers.policy, numbers.proposals, numbers.dataset) == ("1", "2", "3", "4")


def test_from_dict_keeps_defaults_for_missing_null_and_unreadable_values():
    """Guards against a null or unparsable field overriding the default ('unknown', or None for numbers)."""
    assert Provenance.from_dict({"method": None, "epochs": "many", "seed": None}) == Provenance()
    assert Provenance.from_dict("moco_v2") == Provenance() and Provenance.from_dict(None) == Provenance()


def test_reference_provenances_name_their_fields():
    """Guards against the random-init and supervised rows of the report being built with a field moved
    or dropped: the report matches baselines on these exact values."""
    assert Provenance.random_init("resnet18", 4) == Provenance("random_init", "none", "none", 0, "resnet18", "none", 4)
    assert Provenance.supervised("resnet50", "synth:/d:train", 1, epochs=90) == Provenance(
        "supervised", "none", "none", 90, "resnet50", "synth:/d:train", 1)
    assert Provenance.supervised("resnet50", "x", None).epochs == 0


def test_provenance_of_reads_the_pretrain_block_and_replace_keeps_the_rest():
    """Guards against provenance_of reading another key than 'pretrain', and replace() losing fields."""
    prov = Provenance("byol", "random", "none", 8, "resnet18", "synth:/d:train", 2, "no-colour")
    assert provenance_of({"pretrain": prov.to_dict(), "method": "other"}) == prov
    assert prov.replace(seed=5) == Provenance("byol", "random", "none", 8, "resnet18", "synth:/d:train", 5, "no-colour")


def test_split_dataset_spec_needs_a_known_kind_and_a_path():
    """Guards against a plain name (or a bare kind) being split as a spec, or its name replaced."""
    assert split_dataset_spec("synth:/d:test") == ("synth", ["/d", "test"])
    assert split_dataset_spec("voc_2007_test") == (None, ["voc_2007_test"])
    assert split_dataset_spec("synth") == (None, ["synth"])
    assert split_dataset_spec("other:/d") == (None, ["other:/d"])


def test_dataset_tag_is_file_name_safe_and_keeps_case():
    """Guards against a tag that keeps a trailing slash's empty name, turns capitals into '_' or
    writes another filler than one '_' per run of unsafe characters."""
    assert dataset_tag("synth:/data/Synth_Small/:train") == "Synth_Small-train"
    assert dataset_tag("folder:/data/BOX/") == "BOX"  # only slashes are stripped
    assert dataset_tag("my data!!set") == "my_data_set"
    assert dataset_tag("") == "data"


def test_dataset_label_of_short_and_unknown_specs():
    """Guards against labels of specs with too few parts, an empty name or a folder with a trailing slash."""
    assert dataset_label("") == "" and dataset_label(None) == ""
    assert dataset_label("openimages:/d:validation") == "openimages:validation"
    assert dataset_label("folder:/data/imgs/") == "folder:imgs"
    assert dataset_label("folder:/data/BOX/") == "folder:BOX"  # only slashes are stripped
    assert dataset_label("folder:/data/a:b") == "folder:a"


def _ok(stage):
    record = {"schema": SCHEMA_VERSION, "stage": stage, "status": "ok", "pretrain": {"method": "moco_v2"}}
    return {**record, **{k: 1 for k in REQUIRED_FIELDS[stage]}}


def test_validate_results_accepts_a_complete_record_of_each_stage():
    for stage in STAGES:
        assert validate_results(_ok(stage)) == SCHEMA_VERSION


@pytest.mark.parametrize("change, message", [
    ({"schema": -1}, "schema version -1 is not one"),
    ({"schema": SCHEMA_VERSION + 1}, f"(0..{SCHEMA_VERSION})"),
    ({"schema": "1"}, "schema version '1'"),
    ({"stage": "train"}, "'stage' is 'train', expected one of " + ", ".join(STAGES)),
    ({"status": "done"}, "'status' is 'done', expected one of " + ", ".join(STATUSES)),
    ({"pretrain": {"policy": "x"}}, "'pretrain' must be a provenance block with at least 'method'"),
    ({"pretrain": "moco_v2"}, "'pretrain' must be a provenance block"),
])
def test_validate_results_names_what_is_wrong(change, message):
    """Guards against a malformed record passing (a wrong schema bound, `and` for `or`) or failing with an
    error that does not say which field is wrong."""
    with pytest.raises(RecordError) as e:
        validate_results({**_ok("probe"), **change}, where="run/results.json")
    assert str(e.value).startswith("run/results.json: ") and message in str(e.value)


def test_validate_results_lists_every_missing_field_and_names_the_type_of_a_non_object():
    record = {k: v for k, v in _ok("detection").items() if k not in ("task", "box")}
    with pytest.raises(RecordError, match="a detection record with status ok lacks task, box$"):
        validate_results(record)
    with pytest.raises(RecordError, match="^results.json: expected a JSON object, got list$"):
        validate_results([])


def test_results_and_write_results_name_where_the_record_failed(tmp_path):
    """Guards against the stage or the file path being dropped from validation errors, and against
    write_results writing anywhere but RUN/results.json."""
    with pytest.raises(RecordError, match="^probe results: a probe record with status ok lacks dataset, mAP$"):
        results("probe", "ok", Provenance("moco_v2"))
    path = write_results(str(tmp_path), _ok("pretrain"))
    assert path == os.path.join(str(tmp_path), "results.json") and json.load(open(path))["stage"] == "pretrain"
    with pytest.raises(RecordError, match="^" + str(tmp_path / "x")):
        write_results(str(tmp_path / "x"), {"stage": "nope"})
