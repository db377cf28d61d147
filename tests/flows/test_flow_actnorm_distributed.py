"""ActNorm's data-dependent initialization is synchronized across torch.distributed processes (2 CPU gloo ranks)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nf_kernels.flows import ActNorm

WORLD_SIZE = 2


def _rank_batch(rank: int) -> torch.Tensor:
    """Different data and a different batch size on each rank: the pooled statistics differ from either rank's."""
    g = torch.Generator().manual_seed(rank)
    return torch.randn(3 + 5 * rank, 3, 2, 2, generator=g) * (1 + 2 * rank) + 3 * rank


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        layer = ActNorm(3)
        layer(_rank_batch(rank))
        torch.save(layer.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_actnorm_initialization_is_pooled_across_processes(tmp_path):
    # fork, not spawn: the children need not import torch again (seconds each on a busy machine).
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, start_method="fork")
    states = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]
    for name in ("bias", "log_scale"):
        assert torch.equal(states[0][name], states[1][name]), name  # every replica starts identical
    single = ActNorm(3)  # one process that sees both ranks' data: what the pooled statistics must equal
    single(torch.cat([_rank_batch(rank) for rank in range(WORLD_SIZE)]))
    for name in ("bias", "log_scale"):
        torch.testing.assert_close(states[0][name], single.state_dict()[name])
