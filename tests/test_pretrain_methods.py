"""MoCo-v2 and BYOL parts: queue, momentum update, shuffle-BN, losses (ResNet-18, tiny inputs)."""
import math

import pytest
import torch
import torch.nn.functional as F

from objcrop.pretrain.methods import METHODS, BYOL, MoCoV2
from objcrop.pretrain.methods.byol import target_momentum
from objcrop.pretrain.methods.losses import byol_loss, embedding_spread, moco_logits, moco_loss



pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: see conftest

def tiny_moco(K=10, bn_splits=2, m=0.9):
    torch.manual_seed(0)
    return MoCoV2("resnet18", dim=8, K=K, m=m, T=0.2, mlp_hidden=16, bn_splits=bn_splits)


def _imported_modules(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_imports_point_one_way_engine_methods_models():
    """The engine builds methods; methods and the modules below them never import the engine back."""
    import pathlib

    import objcrop.pretrain.methods as methods

    root = pathlib.Path(methods.__file__).parent
    below = sorted(root.glob("*.py")) + [root.parent / "models.py", root.parent / "distributed.py"]
    for path in below:
        bad = [m for m in _imported_modules(path) if m.startswith("objcrop.pretrain.engine")]
        assert not bad, f"{path} imports {bad}"
    for path in (root.parent / "models.py", root.parent / "distributed.py"):
        assert not [m for m in _imported_modules(path) if m.startswith("objcrop.pretrain.methods")], path


def test_methods_dict_names_both_methods():
    assert METHODS["moco_v2"] is MoCoV2 and METHODS["byol"] is BYOL


def test_queue_enqueues_in_order_and_wraps_around():
    model = tiny_moco(K=10)
    keys = [F.normalize(torch.randn(4, 8), dim=1) for _ in range(3)]
    model._dequeue_and_enqueue(keys[0])
    assert int(model.queue_ptr) == 4
    assert torch.equal(model.queue[:, :4], keys[0].T)
    model._dequeue_and_enqueue(keys[1])
    model._dequeue_and_enqueue(keys[2])  # 8 + 4 > K = 10: two slots at the end, two at the start
    assert int(model.queue_ptr) == 2
    assert torch.equal(model.queue[:, 8:10], keys[2][:2].T)
    assert torch.equal(model.queue[:, 0:2], keys[2][2:].T)
    assert torch.equal(model.queue[:, 2:4], keys[0][2:].T)  # the oldest keys were overwritten first


def test_queue_accepts_a_batch_larger_than_itself():
    model = tiny_moco(K=3)
    keys = F.normalize(torch.randn(5, 8), dim=1)
    model._dequeue_and_enqueue(keys)
    assert set(map(tuple, model.queue.T.tolist())) == set(map(tuple, keys[-3:].tolist()))


def test_momentum_update_moves_key_encoder_towards_query_encoder():
    model = tiny_moco(m=0.9)
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    before_k = [p.clone() for p in model.encoder_k.parameters()]
    q = [p.clone() for p in model.encoder_q.parameters()]
    model._momentum_update_key_encoder()
    for k_old, k_new, q_p in zip(before_k, model.encoder_k.parameters(), q):
        torch.testing.assert_close(k_new, 0.9 * k_old + 0.1 * q_p)
    assert all(not p.requires_grad for p in model.encoder_k.parameters())


def test_shuffled_keys_come_back_in_query_order():
    """With BN groups, each key must still belong to its own image after the unshuffle."""
    model = tiny_moco(bn_splits=1)
    model.eval()  # eval BN: per-sample outputs, so order is all that can differ
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        expected = F.normalize(model.encoder_k(x), dim=1)
        got = model._keys_with_shuffled_bn(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_bn_groups_change_batch_statistics():
    model = tiny_moco(bn_splits=2)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        grouped = model._encode_in_bn_groups(model.encoder_q, x)
        whole = model.encoder_q(x)
    assert not torch.allclose(grouped, whole, atol=1e-4)


def test_moco_step_trains_and_updates_queue():
    model = tiny_moco(K=12)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    queue_before = model.queue.clone()
    out = model(x1, x2)
    out["loss"].backward()
    opt.step()
    assert math.isfinite(float(out["loss"])) and 0 <= float(out["acc_top1"]) <= 1
    assert 0 <= float(out["embedding_spread"]) < 2  # logged with the loss (metrics.jsonl)
    assert int(model.queue_ptr) == 4 and not torch.equal(model.queue, queue_before)
    assert all(p.grad is None for p in model.encoder_k.parameters())


def test_moco_loss_prefers_the_positive_key():
    q = F.normalize(torch.randn(5, 8), dim=1)
    queue = F.normalize(torch.randn(8, 20), dim=0)
    logits, labels = moco_logits(q, q, queue, 0.2)
    assert logits.shape == (5, 21) and torch.all(labels == 0)
    torch.testing.assert_close(logits[:, 0], torch.full((5,), 5.0))  # cos = 1 over T = 0.2
    loss_own, acc_own = moco_loss(q, q, queue, 0.2)
    loss_other, acc_other = moco_loss(q, F.normalize(torch.randn(5, 8), dim=1), queue, 0.2)
    assert loss_own < loss_other and float(acc_own) == 1.0 and float(acc_other) < 1.0
    torch.testing.assert_close(loss_own, F.cross_entropy(logits, labels))


def test_moco_forward_reports_the_tested_loss(monkeypatch):
    """One code path: MoCoV2.forward's loss and accuracy are moco_loss's, on its queries, keys and queue."""
    import objcrop.pretrain.methods.moco_v2 as moco_module

    model = tiny_moco()
    seen = []

    def spy(q, k, queue, temperature):
        seen.append((q.detach().clone(), k.clone(), queue.clone(), temperature))
        return moco_loss(q, k, queue, temperature)

    monkeypatch.setattr(moco_module, "moco_loss", spy)
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    assert len(seen) == 1 and seen[0][3] == model.T
    loss, acc = moco_loss(*seen[0])
    torch.testing.assert_close(out["loss"].detach(), loss)
    torch.testing.assert_close(out["acc_top1"], acc)


def test_byol_loss_is_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(byol_loss(p, p * 3)) == pytest.approx(0.0, abs=1e-6)
    assert float(byol_loss(p, -p)) == pytest.approx(4.0)
    assert float(byol_loss(p, p.flip(1))) == pytest.approx(2.0)  # orthogonal
    p, z = torch.randn(2, 2, requires_grad=True), torch.randn(2, 2, requires_grad=True)
    byol_loss(p, z).backward()
    assert p.grad is not None and z.grad is None  # only the prediction gets a gradient


def test_byol_target_momentum_schedule_and_ema():
    assert target_momentum(0.996, 0.0) == pytest.approx(0.996)
    assert target_momentum(0.996, 1.0) == pytest.approx(1.0)
    torch.manual_seed(0)
    model = BYOL("resnet18", proj_hidden=16, proj_dim=8, base_momentum=0.9)
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    t_before = [p.clone() for p in model.target.parameters()]
    online = [p.clone() for p in model.online.parameters()]
    model.after_step(0.0)
    for t_old, t_new, o in zip(t_before, model.target.parameters(), online):
        torch.testing.assert_close(t_new, 0.9 * t_old + 0.1 * o)
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    out["loss"].backward()
    assert 0 <= float(out["loss"]) <= 8 and all(p.grad is None for p in model.target.parameters())


def _ddp_shuffle_worker(rank, world, port, result_dir):
    import os

    from objcrop.pretrain import distributed
    from objcrop.pretrain.distributed import cleanup

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = tiny_moco(bn_splits=1)  # same seed: same weights on both ranks
        model.eval()  # per-sample outputs: only the order can go wrong
        torch.manual_seed(100 + rank)  # different images and different local RNG per rank
        x = torch.randn(3, 3, 32, 32)
        with torch.no_grad():
            expected = F.normalize(model.encoder_k(x), dim=1)
            got = model._keys_with_shuffled_bn(x)
        kept = len(distributed._RECENT_COLLECTIVE_TENSORS)  # held until the group is gone (torch < 2.8 deadlock)
    finally:
        cleanup()
    torch.save({"max_err": float((got - expected).abs().max()), "kept": kept,
                "kept_after_cleanup": len(distributed._RECENT_COLLECTIVE_TENSORS)}, os.path.join(result_dir, f"r{rank}.pt"))


def test_ddp_shuffle_bn_returns_each_rank_its_own_keys(tmp_path):
    """MoCo's batch_shuffle_ddp / batch_unshuffle_ddp over 2 gloo processes."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_shuffle_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = torch.load(tmp_path / f"r{rank}.pt", weights_only=True)
        assert result["max_err"] < 1e-4 and result["kept"] >= 2 and result["kept_after_cleanup"] == 0


def test_embedding_spread_tells_spread_embeddings_from_collapsed_ones():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(512, 128, generator=g)
    assert 0.9 < float(embedding_spread(spread)) < 1.1  # uniform on the sphere: about 1
    one_point = torch.randn(1, 128, generator=g) + 1e-3 * torch.randn(512, 128, generator=g)
    assert float(embedding_spread(one_point)) < 0.01  # every embedding (nearly) the same: about 0
    # a scale does not change it: only directions count
    assert float(embedding_spread(7 * spread)) == pytest.approx(float(embedding_spread(spread)), rel=1e-5)


def test_head_bn_keeps_one_dominant_feature_direction_from_collapsing_the_embeddings():
    """What BN in the head guards against: inputs that share one large direction. A BN-free head maps
    them to nearly one point; BN after the hidden layer standardises each unit, so the small
    differences between images survive."""
    from objcrop.pretrain.models import mlp_head
    torch.manual_seed(0)
    common = torch.rand(64) + 0.5
    x = 30.0 * common + 0.3 * torch.randn(128, 64)  # 128 images: one shared direction, small differences
    plain, with_bn = mlp_head(64, 256, 16, batch_norm=False), mlp_head(64, 256, 16, batch_norm=True)
    with torch.no_grad():
        assert float(embedding_spread(plain(x))) < 0.1
        assert float(embedding_spread(with_bn(x))) > 0.5


def test_moco_head_bn_comes_from_the_config_in_both_encoders():
    from objcrop.pretrain.config import get_pretrain_cfg
    cfg = get_pretrain_cfg()
    cfg.merge_from_list(["PRETRAIN.ARCH", "resnet18", "PRETRAIN.MOCO.MLP_HIDDEN", "16", "PRETRAIN.MOCO.HEAD_BN", "True"])
    model = MoCoV2.from_config(cfg, world_size=1, per_process_batch=8)
    for encoder in (model.encoder_q, model.encoder_k):
        assert any(isinstance(m, torch.nn.BatchNorm1d) for m in encoder.fc)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in tiny_moco().encoder_q.fc)  # MoCo-v2's default head


def test_queue_receives_the_momentum_keys_not_the_queries():
    """Guards against `forward` enqueuing the queries (or the keys before the unshuffle, or anything
    but this step's momentum keys): the K newest queue columns must be the L2-normalised outputs of the
    momentum-updated key encoder on im_k, in batch order. Eval-mode BN makes every output per-sample,
    so the keys can be recomputed independently of the shuffle."""
    model = tiny_moco(K=12)
    model.eval()
    im_q, im_k = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        model(im_q, im_k)
        keys = F.normalize(model.encoder_k(im_k), dim=1)  # the key encoder after this step's momentum update
        queries = F.normalize(model.encoder_q(im_q), dim=1)
    assert int(model.queue_ptr) == 4
    torch.testing.assert_close(model.queue[:, :4], keys.T, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(model.queue[:, :4], queries.T, atol=1e-3)  # the test can tell them apart


def test_byol_regresses_each_prediction_onto_the_other_views_target():
    """Guards against same-view pairing (p1 regressing z1 and p2 regressing z2), which is a trivial task
    at the start (online = target): the loss must be byol_loss(p1, z2) + byol_loss(p2, z1), with the
    predictions from the online network + predictor and the targets from the target network."""
    torch.manual_seed(0)
    model = BYOL("resnet18", proj_hidden=16, proj_dim=8, base_momentum=0.9)
    # train-mode BN: forward runs each view through each network as one batch, as the lines below do
    x1, x2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        loss = model(x1, x2)["loss"]
        p1, p2 = model.predictor(model.online(x1)), model.predictor(model.online(x2))
        z1, z2 = model.target(x1), model.target(x2)
    cross = byol_loss(p1, z2) + byol_loss(p2, z1)
    same = byol_loss(p1, z1) + byol_loss(p2, z2)
    torch.testing.assert_close(loss, cross, rtol=1e-5, atol=1e-6)
    assert abs(float(same) - float(cross)) > 1e-2  # the two pairings give different losses here


# ---------------------------------------------------------------- shuffle-BN in one pass (issue 22)
def _split_and_chunked(bn_splits, head_bn=True, K=16):
    """A MoCo with one-pass split BN, and its twin on the chunked path objcrop had: plain BN layers,
    each encoder forwarded as x.chunk(bn_splits), one chunk after another."""
    import copy

    from objcrop.pretrain.methods.split_bn import SplitBatchNorm1d, SplitBatchNorm2d

    torch.manual_seed(0)
    split = MoCoV2("resnet18", dim=8, K=K, m=0.9, T=0.2, mlp_hidden=16, bn_splits=bn_splits, head_bn=head_bn)
    chunked = copy.deepcopy(split)
    for module in chunked.modules():
        if isinstance(module, (SplitBatchNorm1d, SplitBatchNorm2d)):
            module.num_splits = 1  # plain BatchNorm
    chunked._encode_in_bn_groups = lambda enc, x: torch.cat([enc(c) for c in x.chunk(bn_splits)], dim=0)
    return split, chunked


def _bn_buffers(encoder):
    return {k: v for k, v in encoder.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("n,bn_splits", [(8, 2), (12, 4), (10, 3)])
def test_split_bn_in_one_pass_equals_forwarding_the_chunks(n, bn_splits):
    """Guards against a one-pass split BN that groups other samples than the chunks (the demo's n mod S
    without the reorder), pools the statistics of all groups, averages the running statistics instead
    of updating them as S sequential BN calls do, or forgets to restore the batch order. Outputs,
    gradients and running statistics must equal the chunked path's, in train and in eval mode; the
    batch of 10 in 3 groups (uneven chunks) takes the per-layer chunk fallback. Two training batches:
    the second finds the previous batch's group statistics in the layers' reused scratch, which BN
    must overwrite, not blend in."""
    split, chunked = _split_and_chunked(bn_splits)
    for mode in ("train", "train", "eval"):
        x = torch.randn(n, 3, 32, 32)
        getattr(split, mode)(), getattr(chunked, mode)()
        y_split = split._encode_in_bn_groups(split.encoder_q, x)
        y_chunk = chunked._encode_in_bn_groups(chunked.encoder_q, x)
        torch.testing.assert_close(y_split, y_chunk, rtol=1e-5, atol=1e-5)
        if mode == "train":
            y_split.pow(2).sum().backward()
            y_chunk.pow(2).sum().backward()
            # float32 sums in another order: compared relative to the largest gradient (a Linear bias
            # before BN has a gradient of 0 in exact arithmetic, i.e. noise on both paths)
            scale = max(float(p.grad.abs().max()) for p in chunked.encoder_q.parameters())
            for (name, a), b in zip(split.encoder_q.named_parameters(), chunked.encoder_q.parameters()):
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5 * scale, msg=name)
        ours, theirs = _bn_buffers(split.encoder_q), _bn_buffers(chunked.encoder_q)
        assert ours.keys() == theirs.keys() and any("fc." in k for k in ours)  # the head's BN1d too
        for k in ours:
            torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-6, msg=k)


def test_split_bn_keeps_the_groups_statistics_apart():
    """Guards against one-pass BN silently normalising over the whole batch: in train mode the grouped
    outputs differ from a whole-batch forward, and a group's outputs depend on its members only."""
    split, _ = _split_and_chunked(2)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        grouped = split._encode_in_bn_groups(split.encoder_q, x)
        x2 = x.clone()
        x2[4:] = torch.randn(4, 3, 32, 32)  # change the second group only
        grouped2 = split._encode_in_bn_groups(split.encoder_q, x2)
        from objcrop.pretrain.methods.split_bn import SplitBatchNorm2d
        for m in split.encoder_q.modules():
            if isinstance(m, SplitBatchNorm2d):
                m.num_splits = 1
        whole = split.encoder_q(x)
    torch.testing.assert_close(grouped[:4], grouped2[:4], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(grouped, whole, atol=1e-4)


def test_split_bn_state_dict_keys_are_torchvisions():
    """Guards against the split layers renaming or adding state: checkpoints, resume and the exported
    ResNet must keep torchvision's keys."""
    split = tiny_moco(bn_splits=2)
    plain = tiny_moco(bn_splits=1)
    split.train()(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))  # the layers' scratch exists now
    assert split.state_dict().keys() == plain.state_dict().keys()
    split.load_state_dict(plain.state_dict())


def test_moco_losses_over_steps_equal_the_chunked_paths():
    """The training itself: three MoCo steps (shuffled keys, queue, momentum update, SGD) give the
    chunked path's losses to rel 1e-5."""
    split, chunked = _split_and_chunked(2, head_bn=False)
    losses = {}
    for name, model in (("split", split), ("chunked", chunked)):
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(1)
        losses[name] = []
        for step in range(3):
            x1, x2 = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
            torch.manual_seed(step)  # the same key shuffle on both paths
            out = model(x1, x2)
            opt.zero_grad()
            out["loss"].backward()
            opt.step()
            losses[name].append(float(out["loss"]))
    assert losses["split"] == pytest.approx(losses["chunked"], rel=1e-5)
    assert len(set(losses["split"])) == 3  # the steps changed something


def test_infonce_logits_stay_float32_under_bf16_autocast():
    """Guards against InfoNCE logits computed in bf16 under autocast (issue 18 §7): the einsum / matmul
    is on autocast's lower-precision list, so without an explicit fp32 region the cosines are rounded
    to bf16 before / T. Under CPU bf16 autocast the logits must be float32 and equal the fp32
    reference; the loss too, from bf16 inputs (as a bf16 encoder would give) as from fp32 ones."""
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(16, 32, generator=g), dim=1)
    k = F.normalize(q + 0.3 * torch.randn(16, 32, generator=g), dim=1)
    queue = F.normalize(torch.randn(32, 64, generator=g), dim=0)
    ref_logits, _ = moco_logits(q, k, queue, 0.2)
    ref_loss, _ = moco_loss(q, k, queue, 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = moco_logits(q, k, queue, 0.2)
        loss, _ = moco_loss(q, k, queue, 0.2)
        loss_bf16_in, _ = moco_loss(q.bfloat16(), k.bfloat16(), queue, 0.2)
        assert torch.einsum("nc,ck->nk", q, queue).dtype == torch.bfloat16  # what autocast would do
    assert logits.dtype == torch.float32 and loss.dtype == torch.float32
    torch.testing.assert_close(logits, ref_logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    q16, k16 = q.bfloat16().float(), k.bfloat16().float()  # the inputs' own rounding is all that may differ
    torch.testing.assert_close(loss_bf16_in, moco_loss(q16, k16, queue, 0.2)[0], rtol=1e-6, atol=1e-6)


def test_split_bn_under_channels_last():
    """Guards against the channels_last path (PRETRAIN.CHANNELS_LAST, on in the paper presets; the
    layers chunk the batch there, in order, instead of the caller reordering it for one pass) grouping
    other samples than the chunks: the caller reordering as well, the head's BN1d (2-D, no memory
    format to go by) taking the one-pass grouping, or the chunk mode outliving its forward so that a
    later contiguous batch is both reordered and chunked. Outputs and running statistics equal the
    chunked path's, batch after batch, and the layers hand channels_last tensors on."""
    from objcrop.pretrain.methods.split_bn import SplitBatchNorm2d

    split, chunked = _split_and_chunked(2, head_bn=True)
    split.to(memory_format=torch.channels_last), chunked.to(memory_format=torch.channels_last)
    for memory_format in (torch.channels_last, torch.channels_last, torch.contiguous_format):
        x = torch.randn(8, 3, 32, 32).contiguous(memory_format=memory_format)
        with torch.no_grad():
            y_split = split._encode_in_bn_groups(split.encoder_q, x)
            y_chunk = chunked._encode_in_bn_groups(chunked.encoder_q, x)
        # channels_last convolutions of batch 8 and of batch 4 take different kernels: float noise ~1e-5
        torch.testing.assert_close(y_split, y_chunk, rtol=1e-4, atol=1e-4)
        ours, theirs = _bn_buffers(split.encoder_q), _bn_buffers(chunked.encoder_q)
        for k in ours:
            torch.testing.assert_close(ours[k], theirs[k], rtol=1e-4, atol=1e-5, msg=k)
    bn = next(m for m in split.encoder_q.modules() if isinstance(m, SplitBatchNorm2d))
    feature = torch.randn(8, bn.num_features, 8, 8).contiguous(memory_format=torch.channels_last)
    assert bn(feature).is_contiguous(memory_format=torch.channels_last)
