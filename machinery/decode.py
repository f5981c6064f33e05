"""
The sampler's decode step, eager or compiled: gpt-fast's recipe (decode_one_token, setup_caches). model.decode is
plain PyTorch whose shapes do not change from token to token (machinery/flash.py decode_context); compile=True
hands it to torch.compile(fullgraph=True, dynamic=False), with mode="reduce-overhead" on CUDA, which replays one
CUDA graph per token instead of launching ~50 kernels per layer from Python. The eager step is the same function
uncompiled: the readable reference, and the default.

What a compiled step needs besides static shapes:
- a KV cache whose address does not change: CUDA graphs read and write it in place (it is marked static, so they do
  not copy it in), and one that moved would be recorded again. So one buffer is held on the model for the run (not
  freed before the update: the memory estimate counts it as held) and each call's cache is carved out of it; it
  grows, rarely, when a call needs more rows or a longer length than any before (lengths rounded up, so a run's
  first calls settle it);
- few distinct shapes: a call's rows are rounded up to a bucket (at most 25% more), so a run compiles a handful
  of graphs (one per bucket, and again after the buffer grows longer), not one per call. The rows past a call's
  own are idle (rollout.generate marks them done);
- outputs consumed before the next replay overwrites them: cudagraph_mark_step_begin before each step.
Prefill and prompt sharing stay eager: they run once per call.
"""
import torch

from machinery.flash import KVCache

RECOMPILE_LIMIT = 64  # graphs per model before torch.compile gives up (with fullgraph, an error): buckets x growths


def bucket(n):
    """n rounded up to its first three bits (8, 9, 10, 12, 14, 16, 20, 24, 28, 32, 40, ...): at most 25% more, and
    four sizes per doubling, so that calls of nearby sizes share a compiled graph."""
    step = 1 << max(0, n.bit_length() - 3)
    return -(-n // step) * step


def decoder(model, rows, length, compile=False):
    """(rows to decode, a zeroed KV cache of that many rows and at least `length` columns, the decode step) for a
    sampler call of `rows` rows and up to `length` tokens. Eager: exactly `rows` and `length`, a cache for this
    call (freed with it), model.decode. compile: rows rounded up to a bucket, the cache carved out of the buffer
    held on the model for the run, the step compiled once per model."""
    if not compile:
        return rows, model.new_cache(rows, length), model.decode
    state = model.__dict__.setdefault("compiled_decode", {})  # beside the model, not a module or a buffer
    if "step" not in state:
        cuda = model.lm_head.weight.is_cuda
        step = torch.compile(model.decode, fullgraph=True, dynamic=False, mode="reduce-overhead" if cuda else None,
                             recompile_limit=RECOMPILE_LIMIT)
        state["step"] = marked(step) if cuda else step
    rows, want, held = bucket(rows), model.new_cache(0, 0).buffer, state.get("buffer")  # want: a cache's dtype now
    fits = held is not None and (held.dtype, held.device) == (want.dtype, want.device)
    if not fits or rows > state["rows"] or length > state["length"]:  # grow: the widest and longest call so far
        state["rows"] = max(rows, state["rows"] if fits else 0)
        state["length"] = bucket(max(length, state["length"] if fits else 0))  # rounded up: few growths per run
        state["buffer"] = held = None  # freed before the new one is made
        held = state["buffer"] = model.new_cache(state["rows"], state["length"]).buffer
    cache = model.new_cache(rows, state["length"], buffer=held)  # views of the held buffer, zeroed
    for x in cache.k + cache.v:  # CUDA graphs use them in place (their addresses stay) instead of copying them in
        torch._dynamo.mark_static_address(x)
    return rows, cache, state["step"]


def marked(step):
    """A CUDA-graph step that tells cudagraph trees a new step begins: the last step's outputs (already sampled
    from) may then be overwritten, rather than kept alive in a new graph."""
    def run(*args):
        torch.compiler.cudagraph_mark_step_begin()
        return step(*args)
    return run
