"""
Data parallelism with PyTorch's own engine: `torchrun --nproc_per_node=N train.py ...` starts N
processes; gradients are all-reduced by DistributedDataParallel, and the few global statistics the
algorithm needs (rewards for the advantage, token counts for the loss normalizer, eval sums) by
the collectives below. Run as a plain `python train.py`, every helper is a no-op.

The bookkeeping that keeps ranks in step during an update also lives here, so train.update shows only
the algorithm: one call (minibatches) cuts this rank's rows into minibatches with their global loss
normalizers, and each into micro-batches; a backward (backward) all-reduces only once per minibatch and sums,
rather than averages, the ranks' pieces of one global loss.

A rank that waits at a collective longer than ddp_timeout for the others (one stalled or died) stops with one
line (collective), not after gloo's default of 30 minutes with a traceback about a socket.
"""
import datetime
import functools
import os
from contextlib import nullcontext

import torch
import torch.distributed as dist

from machinery.cli import die
from rollout import pad_left

rank, world = 0, 1
_device = "cpu"  # collectives run on this device: nccl needs CUDA tensors, gloo takes CPU ones
_timeout = 0  # seconds a collective waits for the other ranks (setup's)
LAUNCH = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun sets in each process


def setup(device, timeout=600):
    """Resolve device ("auto": cuda when there is a GPU) and, when launched by torchrun, join the process
    group (gloo on CPU, nccl on GPU) whose collectives wait at most `timeout` seconds for the other ranks;
    returns the device this process uses."""
    global rank, world, _device, _timeout
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        die(f"device={device!r} but torch sees no GPU; use --device=cpu (or auto)")
    if not 1 <= timeout <= 10 ** 9:  # checked here, not in check_config, which needs the world size set up here
        die(f"ddp_timeout must be between 1 and 10**9 seconds, got {timeout}")
    if "RANK" not in os.environ:
        return device
    missing = [k for k in LAUNCH if k not in os.environ]
    if missing:  # a RANK left in the environment by something else: joining a group would fail or hang
        die(f"RANK={os.environ['RANK']} is set but not {', '.join(missing)}: this is no torchrun launch; start "
            f"with torchrun --nproc_per_node=N, or unset RANK to run one process")
    on_gpu, _timeout = device.startswith("cuda"), timeout
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=datetime.timedelta(seconds=timeout))
    rank, world = dist.get_rank(), dist.get_world_size()
    if on_gpu:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    _device = device
    return device


def collective(fn):
    """fn, which waits for the other ranks: when that wait times out, one line saying so, from the rank that
    waited, instead of gloo's traceback (nccl's watchdog ends the process itself after the same timeout)."""
    @functools.wraps(fn)
    def waiting(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RuntimeError as e:  # torch.distributed.DistBackendError is one
            if "timed out" not in str(e).lower() and "timeout" not in str(e).lower():
                raise
            die(f"rank {rank} waited {_timeout}s for the other ranks ({fn.__name__}): one of them stalled or died "
                f"(its own error, if any, is above); the run stops, what it wrote stays whole (continue from its "
                f"last checkpoint, if any, with --init_from=resume); raise ddp_timeout if a rank is only slow")
    return waiting


def share(n):
    """This rank's share of n items (n divisible by the world size), as a range of their indices."""
    return range(rank * (n // world), (rank + 1) * (n // world))


def peak_memory(device):
    """{"peak_mem_gib": the GPU memory peak since the last call} on a GPU (for sizing micro_batch_size and
    sample_batch_size), {} on a CPU."""
    if not device.startswith("cuda"):
        return {}
    peak = torch.cuda.max_memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    return dict(peak_mem_gib=round(peak / 2 ** 30, 2))


@collective
def teardown():
    """End of a successful run, on every rank: wait for the other ranks, then leave the process group.
    Without the barrier a rank could die at exit (SIGABRT, "terminate called without an active exception"):
    gloo's worker threads release a collective's tensors just after it completes, and for a tensor made in
    Python that takes the GIL; a rank already in interpreter shutdown ends such a waiting thread with
    pthread_exit inside a C++ destructor. In the barrier the main thread holds no GIL, so the workers finish,
    and rank 0 arrives last, after its checkpoint, which torchrun then never cuts short. Error paths skip this:
    a failing rank calls no collective, so the others' next one fails at once instead of waiting."""
    if dist.is_initialized():
        dist.barrier(device_ids=[torch.cuda.current_device()] if _device.startswith("cuda") else None)
        dist.destroy_process_group()


@collective
def wrap(model):
    """The model that computes gradients: DDP all-reduces (averages) them during backward."""
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model)


@collective
def all_sum(x):
    """Sum a float over ranks."""
    if world == 1:
        return x
    t = torch.tensor(float(x), dtype=torch.float64, device=_device)
    dist.all_reduce(t)
    return t.item()


@collective
def all_max(x):
    """Max of an int over ranks."""
    if world == 1:
        return x
    t = torch.tensor(x, device=_device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


@collective
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


@collective
def gather_objects(items):
    """Every rank's list concatenated in rank order (on every rank): for the few strings worth logging."""
    if world == 1:
        return list(items)
    parts = [None] * world
    dist.all_gather_object(parts, list(items))
    return [x for p in parts for x in p]


# -----------------------------------------------------------------------------
# keeping ranks in step during an update

def select_rows(parts, budget):
    """This rank's share of the first `budget` trained responses over one or more draws of a step (DAPO's
    dynamic sampling draws again while the filter leaves the batch short), and in "order" each row's index in a
    single process's batch; parts: each draw's rows, dicts of (N, ...) tensors, (N, T) ones left-padded to one
    width."""
    taken, picked = 0, []
    for p in parts:
        counts = gather_ints(p["tokens"].size(0))  # rows kept by each rank in this draw
        before = taken + sum(counts[:rank])
        k = max(0, min(counts[rank], budget - before))
        picked.append(dict({name: v[:k] for name, v in p.items()}, order=torch.arange(before, before + k)))
        taken += sum(counts)
    width = max(p["tokens"].size(1) for p in picked)
    return {k: torch.cat([pad_left(p[k], width) for p in picked]) for k in picked[0]}


def minibatches(rows, n_minibatches, micro_batch_size):
    """The update's plan for this rank's rows, in step with the other ranks. rows: dict of (N, ...) tensors,
    with "order" as select_rows makes it and "mask" (N, T) the trained tokens. Returns (rows: the same tensors
    but "order", plus the padding row at index N (with_padding_row); plan: one (micro, n_tokens, n_seqs) per
    minibatch, where micro lists its micro-batches as (row ids, column slice) (micro_batches), and n_tokens
    and n_seqs count its trained tokens and responses over all ranks (at least 1): the loss normalizers, so
    the pieces of every micro-batch on every rank add up to the minibatch's loss)."""
    n_rows = rows["tokens"].size(0)
    ids_of = minibatch_rows(rows["order"], n_minibatches, n_rows)  # this rank's rows of each minibatch
    rows = with_padding_row({k: v for k, v in rows.items() if k != "order"})
    plan = []
    for ids in ids_of:
        n_tokens = max(all_sum(rows["mask"][ids].sum().item()), 1.0)
        n_seqs = max(all_sum((ids < n_rows).sum().item()), 1.0)  # the padding row is no response
        plan.append((micro_batches(ids, rows["valid"], micro_batch_size), n_tokens, n_seqs))
    return rows, plan


def with_padding_row(rows):
    """rows (dict of (N, ...) tensors) plus one all-padding row at index N, response mask all False: a rank
    that holds fewer rows of a minibatch than another runs it, so every rank does the same forward/backward
    calls (DDP all-reduces in backward and would otherwise wait forever)."""
    return {k: torch.nn.functional.pad(v, (0, 0) * (v.dim() - 1) + (0, 1)) for k, v in rows.items()}


def minibatch_rows(order, n_minibatches, n_rows):
    """This rank's row indices of each minibatch, as a list of (m,) tensors of the same m on every rank.
    order (N,): each of this rank's rows' index in a single process's batch; minibatch k takes the rows at
    k, k+M, k+2M, ... of that batch, so every rank's k-th minibatch is its share of the single-process one.
    Short ones are filled with n_rows, the index of the padding row."""
    n_minibatches = min(n_minibatches, int(all_sum(len(order))))
    mbs = [(order % n_minibatches == k).nonzero().squeeze(1) for k in range(n_minibatches)]
    return [torch.cat((mb, torch.full((all_max(len(mb)) - len(mb),), n_rows))) for mb in mbs]


def micro_batches(ids, valid, size):
    """A minibatch's row ids (m,) cut into micro-batches of `size` rows grouped by length, so that a micro-batch
    pads little, each with the column span (a slice) its rows' tokens occupy. The loss normalizers are totals,
    so grouping changes only the float summation order of the gradient."""
    ids = ids.to(valid.device)  # an index follows the tensor it indexes (rows live on the policy's device)
    ids = ids[valid[ids].sum(1).argsort(stable=True)]
    out = []
    for chunk in ids.split(size or len(ids)):
        cols = valid[chunk].any(0).nonzero().flatten()
        out.append((chunk, slice(int(cols[0]), int(cols[-1]) + 1) if len(cols) else slice(0, 1)))
    return out


@collective
def backward(model, loss, last):
    """loss.backward() for one micro-batch of a minibatch; last: whether it is the minibatch's last one.
    DDP averages gradients over ranks, but each rank's loss is a piece of one global sum (the normalizers
    are global totals), so the mean is undone by multiplying by the world size. All but the last micro-batch
    skip DDP's all-reduce (no_sync); the last one reduces the accumulated sum."""
    sync = nullcontext() if last or world == 1 else model.no_sync()
    with sync:
        (loss * world).backward()
