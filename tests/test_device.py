"""Device resolution on this CPU machine, and a real two-process Gloo group for the cross-rank gather."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from monai.losses import ContrastiveLoss

from models.distributed import gather_with_grad, mean_across_ranks
from pipeline.device import init_distributed, resolve


def test_auto_is_cpu_without_amp_here(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    setup = resolve("auto")
    assert setup.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert setup.amp == torch.cuda.is_available()
    assert not setup.distributed and setup.is_main


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where CUDA is absent")
def test_cuda_requested_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve("cuda")


def _worker(rank: int, world_size: int, port: int, results) -> None:
    import os

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    setup = resolve("cpu")
    init_distributed(setup)
    local = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = gather_with_grad(local)
    gathered.sum().backward()
    mean = mean_across_ranks(torch.full((3,), float(rank)))
    # NT-Xent over the gathered rows, each rank holding half of them; averaged over ranks as DDP does.
    weight, rows = _contrastive_inputs(world_size)
    nt_xent(gather_with_grad(rows.chunk(world_size)[rank] @ weight)).backward()
    dist.all_reduce(weight.grad)
    results[rank] = (
        gathered.detach().tolist(),
        local.grad.tolist(),
        mean.tolist(),
        (weight.grad / world_size).tolist(),
    )
    dist.destroy_process_group()


def _contrastive_inputs(world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(3, 4, generator=generator).requires_grad_()
    return weight, torch.randn(2 * world_size, 3, generator=generator)


def nt_xent(z: torch.Tensor) -> torch.Tensor:
    half = len(z) // 2
    return ContrastiveLoss(temperature=0.5)(z[:half], z[half:])


@pytest.mark.slow
def test_gather_across_two_real_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_worker, args=(2, port, results), nprocs=2, join=True)
    weight, rows = _contrastive_inputs(2)
    nt_xent(rows @ weight).backward()  # one process holding every row
    for rank in (0, 1):
        gathered, grad, mean, contrastive = results[rank]
        assert torch.allclose(torch.tensor(contrastive), weight.grad, atol=1e-6)  # the same step as one process
        assert gathered == [[1.0] * 3] * 2 + [[2.0] * 3] * 2  # rank order, every rank sees all rows
        # Both ranks' copies of the loss send each local row a gradient of 1; summed, DDP's averaging then
        # leaves the global loss's gradient (checked against one process above).
        assert grad == [[2.0] * 3] * 2
        assert mean == [0.5] * 3
