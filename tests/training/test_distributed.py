"""DDP gradient all-reduce through shared memory (job.training.distributed.SharedMemoryAllReduce),
with real gloo process groups in separate processes: the same result as gloo's own all-reduce."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from job.training.distributed import (
    SharedMemoryAllReduce,
    all_gather,
    all_reduce,
    is_distributed,
    shared_memory_allreduce_hook,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mean_worker(rank, world, port, sizes, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    reducer = SharedMemoryAllReduce.create(max(sizes))
    for size in sizes:  # buckets smaller than the capacity, odd sizes: uneven slices per rank
        g = torch.Generator().manual_seed(1000 * rank + size)
        mine = torch.randn(size, generator=g)
        expected = mine.clone()
        dist.all_reduce(expected)
        got = reducer.all_reduce_mean(mine.clone())
        out.put((rank, size, float((got - expected / world).abs().max())))
    dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_shared_memory_mean_equals_gloo_all_reduce(world):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    sizes = [1, 7, 1000, 250_001]
    procs = [
        ctx.Process(target=_mean_worker, args=(r, world, PORTS[world], sizes, out))
        for r in range(world)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in range(world * len(sizes))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(results) == world * len(sizes)
    assert max(err for _, _, err in results) < 1e-5
    assert (
        not [f for f in os.listdir("/dev/shm") if f.startswith("nmt-ddp-grads-")]
        if os.path.isdir("/dev/shm")
        else True
    )


def _ddp_worker(rank, world, port, use_hook, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Embedding(50, 8), torch.nn.Flatten(), torch.nn.Linear(24, 5)
    )
    ddp = torch.nn.parallel.DistributedDataParallel(
        model, gradient_as_bucket_view=True, bucket_cap_mb=0.001
    )
    if use_hook:
        ddp.register_comm_hook(
            SharedMemoryAllReduce.create(sum(p.numel() for p in model.parameters())),
            shared_memory_allreduce_hook,
        )
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(rank)
    for _ in range(5):  # different data on each rank
        x, y = torch.randint(0, 50, (4, 3), generator=g), torch.randint(0, 5, (4,), generator=g)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
    if rank == 0:
        # a plain list: a tensor would travel as a file descriptor the exiting child may close first
        out.put(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist())
    dist.destroy_process_group()


def test_ddp_with_the_hook_trains_like_ddp_with_gloo():
    ctx = mp.get_context("spawn")
    params = {}
    for use_hook in (False, True):
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_ddp_worker, args=(r, 2, PORTS[("ddp", use_hook)], use_hook, out))
            for r in range(2)
        ]
        for p in procs:
            p.start()
        params[use_hook] = out.get(timeout=120)
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    assert torch.allclose(torch.tensor(params[True]), torch.tensor(params[False]), atol=1e-6)


def _no_room_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    SharedMemoryAllReduce.FOLDER = (
        "/nonexistent-shm"  # no room there: every rank gets None, none hangs
    )
    out.put(SharedMemoryAllReduce.create(1000) is None)
    dist.destroy_process_group()


def test_without_room_in_shared_memory_every_rank_keeps_gloo():
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_no_room_worker, args=(r, 2, PORTS["room"], out)) for r in range(2)]
    for p in procs:
        p.start()
    assert [out.get(timeout=120) for _ in range(2)] == [True, True]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0


PORTS = {
    "room": _free_port(),
    2: _free_port(),
    3: _free_port(),
    ("ddp", False): _free_port(),
    ("ddp", True): _free_port(),
}


def test_single_process_helpers_return_the_local_values():
    assert not is_distributed()
    assert all_reduce([1.5, 2.0]) == [1.5, 2.0]
    assert all_reduce([3.0], op="max") == [3.0]
    assert all_gather({"step": 7}) == [{"step": 7}]


def _helpers_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    out.put(
        (
            rank,
            is_distributed(),
            all_reduce([rank + 1.0, 10.0]),
            all_reduce([float(rank)], op="max"),
            all_gather(f"r{rank}"),
        )
    )
    dist.destroy_process_group()


def test_helpers_across_two_processes():
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_helpers_worker, args=(r, 2, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    for _rank, distributed, summed, maxed, gathered in results:
        assert distributed
        assert summed == [3.0, 20.0] and maxed == [1.0] and gathered == ["r0", "r1"]
