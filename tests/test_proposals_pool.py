"""The proposal workers' pool: started once per process and reused by later stores, dropped after a failure."""
import pytest

from objcrop.pretrain.proposals import compute
from objcrop.pretrain.proposals.compute import compute_store, work_items
from objcrop.pretrain.proposals.methods import MethodSpec


@pytest.fixture(scope="module")
def records(synth_dir):
    from objcrop.datasets import load_dataset

    return load_dataset(f"synth:{synth_dir}:train")[0]


# A wedged pool hangs rather than fails: these tests fail in a minute instead of at the suite's limit.
pytestmark = pytest.mark.timeout(120)


def _pids():
    return compute.worker_pids()


def test_later_stores_reuse_the_pool_and_match_a_serial_run(records, tmp_path):
    spec = MethodSpec("saliency-spectral")
    items = work_items(records[:6], spec)
    compute.close_worker_pool()
    try:
        first = compute_store(items, spec, str(tmp_path / "a.ocp"), workers=3, progress=False)
        pids = _pids()
        assert len(pids) == 2  # --workers 3: this process and 2 it started
        second = compute_store(items[:4], spec, str(tmp_path / "b.ocp"), workers=3, progress=False)
        assert _pids() == pids  # no new workers for the second store
        serial = compute_store(items, spec, str(tmp_path / "c.ocp"), workers=1, progress=False)
        assert open(first, "rb").read() == open(serial, "rb").read()
        assert len(open(second, "rb").read()) > 0
    finally:
        compute.close_worker_pool()


def test_a_failed_store_drops_the_pool_and_the_next_starts_afresh(records, tmp_path):
    spec = MethodSpec("saliency-spectral")
    good = work_items(records[:3], spec)
    broken = good + [dict(good[0], image_id="missing", file_name=str(tmp_path / "no-such-image.png"))]
    compute.close_worker_pool()
    try:
        compute_store(good, spec, str(tmp_path / "a.ocp"), workers=3, progress=False)
        pids = _pids()
        assert len(pids) == 2
        with pytest.raises(Exception):
            compute_store(broken, spec, str(tmp_path / "b.ocp"), workers=3, progress=False)
        assert compute._POOL["pool"] is None
        compute_store(good, spec, str(tmp_path / "c.ocp"), workers=3, progress=False)
        assert len(_pids()) == 2 and not set(_pids()) & set(pids)
    finally:
        compute.close_worker_pool()


def test_this_process_computes_beside_the_pool_and_takes_back_unstarted_chunks():
    """_pool_results with a local runner: every chunk's results come out exactly once, whether a worker
    ran it, this process ran it while waiting, or this process took it back from the pool once the
    chunks ran out (`sorted` stands for the proposal function: instant, so this process runs most)."""
    chunks = [[3 * k + 2, 3 * k, 3 * k + 1] for k in range(40)]
    ran_here = []

    def here(fn, chunk):
        ran_here.append(chunk)
        return fn(chunk)

    compute.close_worker_pool()
    try:
        results = list(compute._pool_results(compute.worker_pool(1), sorted, iter(chunks), window=8, local=here))
    finally:
        compute.close_worker_pool()
    assert sorted(results) == list(range(3 * len(chunks)))
    assert ran_here  # the worker was still starting: this process did not just wait
    assert len(ran_here) > len(chunks) - 8  # it took back submitted chunks no worker had started
