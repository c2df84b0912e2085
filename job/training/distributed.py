"""DDP plumbing for the training loop: is this a multi-rank run, small all-reduces and gathers,
and the shared-memory gradient all-reduce for ranks on one host.

Every helper also works in a single process (no process group): it returns the local value.
"""

from __future__ import annotations

import os
import uuid

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


_control: list = [None]  # the gloo group of init_control_group, when the default is NCCL


def init_control_group() -> None:
    """Collective (every rank, once): with NCCL as the default backend, a gloo group for the
    loop's small agreements, so that they run on the host and agreeing on the next step does not
    wait for the GPU's queued work (a CUDA tensor read back would)."""
    if is_distributed() and dist.get_backend() == "nccl" and _control[0] is None:
        _control[0] = dist.new_group(backend="gloo")


def _host_group():
    if dist.get_backend() != "nccl":
        return None  # the default group runs on the host already
    if _control[0] is None:
        raise RuntimeError("call init_control_group() on every rank first")
    return _control[0]


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Element-wise sum (or "max") of a few floats over all ranks, in float64, on the host."""
    t = torch.tensor(values, dtype=torch.float64)
    if is_distributed():
        reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
        dist.all_reduce(t, op=reduce_op, group=_host_group())
    return t.tolist()


def gather_floats(values: list[float]) -> list[list[float]]:
    """Every rank's few floats, in rank order, on the host (one collective)."""
    t = torch.tensor(values, dtype=torch.float64)
    if not is_distributed():
        return [t.tolist()]
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t, group=_host_group())
    return [o.tolist() for o in out]


def all_gather(obj) -> list:
    """Every rank's `obj`, in rank order (a one-element list in a single process)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj, group=_host_group())
    return gathered


class SharedMemoryAllReduce:
    """DDP gradient all-reduce through one shared-memory file, for ranks that share a host.

    gloo all-reduces over TCP even between processes on one machine: 27 ms for the 33 MB of
    gradients of an 8M-parameter model on this 2-core box, against 17 ms for this (measured,
    BENCHMARKS.md). Each rank copies its bucket into its own slot; after a barrier each rank
    sums one slice of the slots into a shared result; after a second barrier every rank copies
    the result back. Collective order is DDP's bucket order, identical on every rank. Used only
    on CPU when every rank runs on the same node and /dev/shm has room; otherwise (multi-node
    runs included) gloo's own all-reduce stays.
    """

    FOLDER = "/dev/shm"

    @classmethod
    def create(cls, numel: int) -> SharedMemoryAllReduce | None:
        """Collective: every rank calls it. None (keep gloo) where /dev/shm is missing or has
        less than twice the room needed (Docker's default /dev/shm is 64 MB; a tmpfs that runs
        full would kill the workers with SIGBUS)."""
        world = dist.get_world_size()
        name = [None]
        if dist.get_rank() == 0:
            need = (world + 1) * numel * 4
            try:
                st = os.statvfs(cls.FOLDER)
                room = st.f_bavail * st.f_frsize
            except OSError:
                room = 0
            if room >= 2 * need:
                name[0] = os.path.join(cls.FOLDER, f"nmt-ddp-grads-{uuid.uuid4().hex}")
                with open(name[0], "wb") as f:
                    f.truncate(need)
        dist.broadcast_object_list(name, src=0)
        return cls(name[0], numel) if name[0] else None

    def __init__(self, path: str, numel: int):
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        size = (self.world + 1) * numel
        memory = torch.from_file(path, shared=True, size=size, dtype=torch.float32)
        dist.barrier()
        if self.rank == 0:
            os.unlink(path)  # every rank has it mapped; the memory goes when the last one exits
        self.slots = memory[: self.world * numel].view(self.world, numel)
        self.result = memory[self.world * numel :]

    def all_reduce_mean(self, buffer: torch.Tensor) -> torch.Tensor:
        n = buffer.numel()
        self.slots[self.rank, :n].copy_(buffer)
        dist.barrier()
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        torch.sum(self.slots[:, lo:hi], dim=0, out=self.result[lo:hi]).div_(self.world)
        dist.barrier()
        return buffer.copy_(self.result[:n])


def shared_memory_allreduce_hook(state: SharedMemoryAllReduce, bucket):
    """DDP comm hook (register_comm_hook(state, hook)): the bucket's mean over ranks, in place.
    No return annotation: DDP compares it literally with Future[Tensor], and this module's
    `from __future__ import annotations` would make it a string."""
    future = torch.futures.Future()
    future.set_result(state.all_reduce_mean(bucket.buffer()))
    return future


def use_shared_memory_allreduce(ddp_model, numel: int, device: torch.device, nodes: list) -> bool:
    """Collective. Registers the shared-memory all-reduce on a CPU DDP model whose ranks all run
    on one node (`nodes`: every rank's node id); returns whether it did."""
    if not is_distributed() or device.type != "cpu" or len(set(nodes)) != 1:
        return False
    reducer = SharedMemoryAllReduce.create(numel)
    if reducer is None:
        return False
    ddp_model.register_comm_hook(reducer, shared_memory_allreduce_hook)
    return True
