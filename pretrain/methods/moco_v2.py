"""MoCo-v2 (He et al. 2020; Chen et al. 2020), after moco/builder.py, with a single-process path.

Differences from the reference builder, each for a failure users hit with it:
* shuffle-BN also without DDP: the batch is normalised in `bn_splits` BN groups and the keys in a
  shuffled order, so a query and its positive key never share batch statistics (the statistics
  would otherwise leak the pairing and the pretext task becomes trivial). The groups are computed
  in one forward pass (methods/split_bn.py, after MoCo's single-GPU demo), with the statistics and
  running averages that forwarding the `bn_splits` chunks one after another would give;
* the queue wraps around, so a batch that does not divide K (or a short batch) is fine.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from objcrop.pretrain.distributed import broadcast_, concat_all_gather, get_rank, get_world_size
from objcrop.pretrain.methods.losses import embedding_spread, moco_loss
from objcrop.pretrain.methods.split_bn import convert_to_split_bn, groups_in_chunks, interleave_groups, prefers_chunks
from objcrop.pretrain.models import build_resnet, mlp_head


class MoCoV2(nn.Module):
    """A query encoder, a momentum key encoder and a queue of negative keys.

    dim: feature dimension (128); K: queue size (65536); m: key-encoder momentum (0.999);
    T: softmax temperature (0.2); mlp_hidden: hidden width of the 2-layer head (2048 for ResNet-50);
    bn_splits: BN groups per process for shuffle-BN (1 under DDP is MoCo's setup);
    head_bn: BN after the head's hidden layer (not in MoCo-v2; in MoCo-v3 and SimCLR);
    stem: the ResNet stem (objcrop.pretrain.models.build_resnet; PRETRAIN.STEM).
    """

    BACKBONE_PREFIX = "encoder_q."  # state-dict prefix of the exported ResNet (as in MoCo's checkpoints)
    SYNC_BN = False  # shuffle-BN keeps a query's and its key's statistics apart; SyncBN would share them

    def __init__(self, arch: str = "resnet50", dim: int = 128, K: int = 65536, m: float = 0.999,
                 T: float = 0.2, mlp_hidden: int = 2048, bn_splits: int = 1,
                 head_bn: bool = False, stem: str = "imagenet"):
        super().__init__()
        self.K, self.m, self.T, self.bn_splits = K, m, T, max(1, bn_splits)
        self.arch = arch

        self.encoder_q, width = build_resnet(arch, stem=stem)
        self.encoder_q.fc = mlp_head(width, mlp_hidden, dim, batch_norm=head_bn)
        if self.bn_splits > 1:  # same state-dict keys: checkpoints and the exported ResNet are unchanged
            convert_to_split_bn(self.encoder_q, self.bn_splits)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for param_k in self.encoder_k.parameters():
            param_k.requires_grad = False  # updated by momentum, not by gradient

        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @classmethod
    def from_config(cfg_cls, cfg, world_size: int, per_process_batch: int) -> "MoCoV2":
        c = cfg.PRETRAIN.MOCO
        splits = c.BN_SPLITS or (1 if world_size > 1 else max(2, per_process_batch // 32))
        return cfg_cls(cfg.PRETRAIN.ARCH, c.DIM, c.K, c.M, c.T, c.MLP_HIDDEN, splits, c.HEAD_BN,
                       cfg.PRETRAIN.STEM)

    def log_setup(self, logger, world_size: int) -> None:
        """State the queue, momentum, temperature and shuffle-BN groups once, at the start of a run."""
        logger.info(f"MoCo-v2: K={self.K} m={self.m} T={self.T}; shuffle-BN with {self.bn_splits} "
                    f"BN group(s) per process (one forward pass) x {world_size} process(es)")
        if self.bn_splits == 1 and world_size == 1:
            logger.warning("MoCo-v2 in one process with PRETRAIN.MOCO.BN_SPLITS 1: queries and keys share "
                           "BN statistics (no shuffle-BN); use BN_SPLITS >= 2")

    @property
    def backbone(self) -> nn.Module:
        """The online ResNet (its `fc` is the projection head, dropped when exported)."""
        return self.encoder_q

    @torch.no_grad()
    def _momentum_update_key_encoder(self):
        params_q = [p.detach() for p in self.encoder_q.parameters()]
        params_k = list(self.encoder_k.parameters())
        # k = m k + (1 - m) q as one lerp: one pass over the weights instead of a multiply and an add
        torch._foreach_lerp_(params_k, params_q, 1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor):
        keys = concat_all_gather(keys)  # keys of every process, in rank order
        keys = keys[-self.K:]  # a batch larger than the queue keeps its newest keys
        ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(keys.shape[0], device=keys.device)) % self.K  # wraps around
        self.queue[:, slots] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + keys.shape[0]) % self.K

    def _encode_in_bn_groups(self, encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`encoder(x)` with BN statistics per group, the groups being x.chunk(bn_splits); one pass.

        The split BN layers group sample n with the samples n + S, n + 2S, ...; the batch is reordered
        so that those are the members of one chunk, and the outputs are put back in order."""
        s, n = self.bn_splits, x.shape[0]
        if s == 1 or not encoder.training or n % s:  # eval BN is per-sample; an uneven batch is chunked by the layers
            return encoder(x)
        if prefers_chunks(x):  # channels_last: the layers chunk it, in order (split_bn.py says why)
            with groups_in_chunks(encoder):
                return encoder(x)
        order = interleave_groups(n, s, x.device)
        return encoder(x[order])[torch.argsort(order)]

    @torch.no_grad()
    def _shuffled_order(self, n: int, device: torch.device) -> torch.Tensor:
        """A random permutation of the global batch, the same on every process (rank 0 draws it)."""
        idx = torch.randperm(n, device=device)
        return broadcast_(idx, src=0)

    @torch.no_grad()
    def _keys_with_shuffled_bn(self, im_k: torch.Tensor) -> torch.Tensor:
        """Keys computed on a shuffled batch, returned in the original order. Under DDP the batch is
        shuffled across processes (MoCo's batch_shuffle_ddp / batch_unshuffle_ddp)."""
        n_local = im_k.shape[0]
        im_all = concat_all_gather(im_k)  # N_global x 3 x S x S
        idx_shuffle = self._shuffled_order(im_all.shape[0], im_k.device)
        idx_unshuffle = torch.argsort(idx_shuffle)
        mine = idx_shuffle.view(get_world_size(), -1)[get_rank()]
        k = F.normalize(self._encode_in_bn_groups(self.encoder_k, im_all[mine]).float(), dim=1)
        k_all = concat_all_gather(k)  # keys in shuffled global order
        mine_back = idx_unshuffle.view(get_world_size(), -1)[get_rank()]
        assert mine_back.numel() == n_local
        return k_all[mine_back]  # this process's keys, aligned with its queries

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> dict:
        q = F.normalize(self._encode_in_bn_groups(self.encoder_q, im_q).float(), dim=1)  # queries: NxC
        with torch.no_grad():
            self._momentum_update_key_encoder()
            k = self._keys_with_shuffled_bn(im_k)  # keys: NxC
        loss, acc = moco_loss(q, k, self.queue.clone().detach(), self.T)
        self._dequeue_and_enqueue(k)
        return {"loss": loss, "acc_top1": acc, "embedding_spread": embedding_spread(q)}

    def after_step(self, progress: float) -> None:
        """Hook after each optimiser step (MoCo updates its key encoder inside forward)."""
