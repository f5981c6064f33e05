"""
Staleness as a design choice: the sampler lags `staleness` = K training steps behind the trainer, as in an
asynchronous pipeline whose samplers generate while the trainer steps (verl's fully async mode, AReaL,
PipelineRL; prime-rl's one step off-policy is K = 1). The rollouts of step t come from the policy after step
t-1-K (the initial policy while t-1-K < 0); K = 0 is the on-policy loop, and changes nothing. K counts steps
(a batch of rollouts each, and as many optimizer steps as ppo_epochs x minibatches), as asynchronous systems
count policy versions: one per weight update of their samplers.

The K snapshots it needs (the policy after steps t-1-K .. t-2, oldest first) are a FIFO in the run's state,
so that the checkpoint (train_state.pt) holds them and a resumed run samples what an uninterrupted one would.
Every rank holds the same weights (DDP), so the ranks' snapshots agree without a collective. memory.py counts
their memory: K fp32 copies of the weights, on the policy's device.

A snapshot is loaded into the policy's own parameters (copy_: the same addresses), so a compiled or
CUDA-graph-captured sampler needs no second model. Also here: M2PO's mask cutoff, over all ranks' tokens.
"""
from contextlib import contextmanager

import torch

from loss import m2po_cutoff
from machinery import distributed as ddp
from machinery.cli import die


@contextmanager
def behaviour(policy, state, staleness):
    """Within the block the policy holds the behaviour policy's weights, K = staleness steps old; on leaving
    it, the policy's own weights are back and state["stale"] (the FIFO) has moved on by one step."""
    if staleness == 0:  # the state (and the checkpoint) as without the knob
        yield
        return
    fifo = state.setdefault("stale", [])  # [{parameter name: tensor}], oldest first, at most K
    params = dict(policy.named_parameters())
    fifo[:] = [checked(snapshot, params) for snapshot in fifo]  # after a resume: to the policy's device
    if not fifo:  # step 1: the behaviour policy is the initial one, the policy itself
        yield
        fifo.append({name: p.detach().clone() for name, p in params.items()})
        return
    oldest = fifo[0]
    # full: the oldest snapshot's memory is reused for the newest; in the first K steps a new one is made
    full = len(fifo) == staleness
    spare = fifo.pop(0) if full else {name: torch.empty_like(p) for name, p in params.items()}
    with torch.no_grad():
        for name, p in params.items():  # one parameter at a time: no second copy of the whole model
            current = p.clone()
            p.copy_(oldest[name])
            spare[name].copy_(current)  # spare may be oldest itself: read just above
    try:
        yield
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(spare[name])
    fifo.append(spare)  # the policy after the last step: it samples K steps from now


def checked(snapshot, params):
    """A snapshot on the parameters' device, once its names and shapes are checked against theirs (a resume
    reads it to the CPU)."""
    if snapshot.keys() != params.keys() or any(snapshot[k].shape != p.shape for k, p in params.items()):
        die("the checkpoint's policy snapshots (train_state.pt's 'stale') do not fit the model: its weights "
            "and train state do not belong together; resume from a whole checkpoint of this run, or start it "
            "over with --overwrite=True")
    return {k: v.to(params[k].device) for k, v in snapshot.items()}


def global_m2po_cutoff(pi_old, rows, threshold):
    """loss.m2po_cutoff over every rank's trained tokens of the step, so that the mask depends on neither the
    world size nor the micro-batches. pi_old (N, T): this rank's; rows: the update's (the sampler's log-probs,
    the mask)."""
    squares = (pi_old - rows["old_logprobs"])[rows["mask"] > 0].square()  # as loss.is_weights computes them
    return m2po_cutoff(torch.tensor(ddp.gather_objects(squares.tolist()), dtype=torch.float64), threshold)
