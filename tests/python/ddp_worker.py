"""One rank of the DistributedDataParallel test (test_ddp.py runs two of these).

The model, the global batch and the loss are defined here once, so that the test computes
the single-process reference from exactly the same definitions.
"""
import os
import sys

import torch

import nsa

CONFIG = dict(block_len=4, stride=2, sel_block=8, top_n=3, n_init=1, n_local=1, window=6)
GLOBAL_BATCH = 4


def build_model():
    torch.manual_seed(0)
    return nsa.NativeSparseAttention(16, 4, 2, 8, 6, shared_kv=False, **CONFIG)


def global_batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(GLOBAL_BATCH, 40, 16, generator=gen), torch.randn(GLOBAL_BATCH, 40, 16, generator=gen)


def loss_fn(model, x, y):
    """Mean over the (local) batch, so DDP's gradient average is the global batch's gradient."""
    return (model(x) - y).square().mean()


def main(out_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    nsa.set_num_threads(1)
    dist.init_process_group("gloo")  # RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT from the environment
    rank, world = dist.get_rank(), dist.get_world_size()
    model = DistributedDataParallel(build_model())
    x, y = global_batch()
    per_rank = GLOBAL_BATCH // world
    local = slice(rank * per_rank, (rank + 1) * per_rank)
    loss_fn(model, x[local], y[local]).backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out_path)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
