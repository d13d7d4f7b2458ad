"""objcrop.detection.resume's data replay on --resume, and its switch (cfg.OBJCROP.RESUME_REPLAY)."""
import itertools
import json
import types

from objcrop.detection.resume import RngStates, continue_where_stopped


def _trainer(start_iter, max_iter=10):
    drawn = []
    batches = (drawn.append(i) or i for i in itertools.count())
    inner = types.SimpleNamespace(_data_loader_iter=batches)
    return types.SimpleNamespace(start_iter=start_iter, max_iter=max_iter, _trainer=inner), drawn


def _metrics(tmp_path, iterations):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"iteration": i, "loss": 1.0}) + "\n" for i in iterations))
    return str(path)


def test_resume_replays_exactly_the_batches_trained_before_the_checkpoint(tmp_path):
    """Guards against a replay of too few or too many batches (the resumed run would train on other data)."""
    trainer, drawn = _trainer(start_iter=4)
    continue_where_stopped(trainer, RngStates(), _metrics(tmp_path, [2, 4, 6]))
    assert drawn == [0, 1, 2, 3]
    assert next(trainer._trainer._data_loader_iter) == 4  # the next training batch is the 5th


def test_resume_replay_off_restarts_the_data_order_and_still_cuts_the_metrics(tmp_path):
    """Guards against RESUME_REPLAY False still paying for the replay, or leaving stale metrics lines."""
    trainer, drawn = _trainer(start_iter=4)
    metrics = _metrics(tmp_path, [2, 4, 6])
    continue_where_stopped(trainer, RngStates(), metrics, replay=False)
    assert drawn == []
    assert [json.loads(line)["iteration"] for line in open(metrics)] == [2, 4]


def test_a_run_killed_while_evaluating_after_its_last_iteration_replays_nothing(tmp_path):
    trainer, drawn = _trainer(start_iter=10, max_iter=10)
    continue_where_stopped(trainer, RngStates(), _metrics(tmp_path, [10]))
    assert drawn == []
