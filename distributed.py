"""
Data parallelism with PyTorch's own engine: `torchrun --nproc_per_node=N train.py ...` starts N
processes; gradients are all-reduced by DistributedDataParallel, and the few global statistics the
algorithm needs (rewards for the advantage, token counts for the loss normalizer, eval sums) by
the collectives below. Run as a plain `python train.py`, every helper is a no-op.
"""
import os

import torch
import torch.distributed as dist

from configurator import die

rank, world = 0, 1
_device = "cpu"  # collectives run on this device: nccl needs CUDA tensors, gloo takes CPU ones


def setup(device):
    """Resolve device ("auto": cuda when there is a GPU) and, when launched by torchrun, join the process group
    (gloo on CPU, nccl on GPU); returns the device this process uses."""
    global rank, world, _device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        die(f"device={device!r} but torch sees no GPU; use --device=cpu (or auto)")
    if "RANK" not in os.environ:
        return device
    on_gpu = device.startswith("cuda")
    dist.init_process_group("nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if on_gpu:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    _device = device
    return device


def teardown():
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(model):
    """The model that computes gradients: DDP all-reduces (averages) them during backward."""
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model)


def all_sum(x):
    """Sum a float over ranks."""
    if world == 1:
        return x
    t = torch.tensor(float(x), dtype=torch.float64, device=_device)
    dist.all_reduce(t)
    return t.item()


def all_max(x):
    """Max of an int over ranks."""
    if world == 1:
        return x
    t = torch.tensor(x, device=_device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather_rows(t):
    """Concatenate each rank's (b, ...) tensor, the same b everywhere, in rank order -> (world * b, ...)."""
    if world == 1:
        return t
    parts = [torch.empty_like(t, device=_device) for _ in range(world)]
    dist.all_gather(parts, t.to(_device))
    return torch.cat(parts).to(t.device)


def gather_ints(x):
    """Each rank's int, as a list in rank order."""
    if world == 1:
        return [x]
    return gather_rows(torch.tensor([x])).tolist()
