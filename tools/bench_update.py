"""
bench.py's update comparison: train.update's work (micro-batches grouped by length, log-probs of the response
tokens, backward) next to transformers' forward + backward as TRL's GRPOTrainer runs it (micro-batches in batch
order, logits over the response columns only), on the same rows; the GSM8K-like rows (gsm8k_rows) and the update
at that shape (--gsm8k); and the timer every bench uses.
"""
import statistics
import tempfile
import time

import torch
from torch.distributed._tools.mem_tracker import MemTracker
from transformers import AutoModelForCausalLM, Qwen2Config

from machinery.distributed import micro_batches
from model import Transformer, positions
from rollout import Rollout


def timeit(fns, device, repeat, warmup=True):
    """Median time of each function over `repeat` rounds; within a round the functions run back to back, so
    drift in the load of a shared machine hits them alike. On a CPU with one thread the clock is the process's
    CPU time, which other processes' load does not inflate; otherwise wall time."""
    clock = time.process_time if device == "cpu" and torch.get_num_threads() == 1 else time.perf_counter
    for fn in fns if warmup else ():
        fn()  # warm-up: allocator, kernels, lazy inits
    times = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t = clock()
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[i].append(clock() - t)
    return [statistics.median(t) for t in times]


KERNELS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product")  # what compiling cannot speed up


def kernel_share(fn, repeat=3):
    """The share of fn's time spent in its matrix products and attention kernels (torch.profiler's self time of
    KERNELS, over the calls' clock): the floor that removing every other cost (Python, small ops, launches: what
    torch.compile and CUDA graphs remove) cannot go under. Both in the same clock, so load moves them alike."""
    from torch.profiler import ProfilerActivity, profile
    fn()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda) as prof:
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    self_us = lambda e: e.self_device_time_total if cuda else e.self_cpu_time_total
    kernels = sum(self_us(e) for e in prof.key_averages() if e.key.startswith(KERNELS)) / 1e6
    return min(1.0, kernels / wall)


def ours_update(model, rows, micro_batch, amp):
    """What train.update runs on a minibatch, one function per micro-batch: grouped by length, the response
    tokens' log-probs, backward."""
    def step(ids, cols):
        with amp():
            logprobs, _ = model(rows.tokens[ids][:, cols], rows.valid[ids][:, cols], rows.mask[ids][:, cols])
        logprobs.sum().backward()
    groups = micro_batches(torch.arange(len(rows.valid)), rows.valid, micro_batch)  # train.update's grouping
    return [lambda ids=ids, cols=cols: step(ids, cols) for ids, cols in groups]


def hf_update(model, rows, micro_batch, amp):
    """The same with transformers, as TRL's GRPOTrainer runs it: micro-batches in batch order at the batch's
    width, logits only over the response columns (logits_to_keep), log-probs by logsumexp."""
    P = int(rows.mask.any(0).nonzero()[0])  # the first response column

    def step(ids):
        tokens, valid, mask = rows.tokens[ids], rows.valid[ids], rows.mask[ids]
        with amp():
            logits = model(tokens, attention_mask=valid.long(), position_ids=positions(valid),
                           logits_to_keep=tokens.size(1) - P + 1).logits[:, :-1].float()  # (b, R, V)
        logprobs = logits.gather(-1, tokens[:, P:, None]).squeeze(-1) - logits.logsumexp(-1)  # (b, R)
        (logprobs * mask[:, P:]).sum().backward()
    return [lambda ids=ids: step(ids) for ids in torch.arange(rows.tokens.size(0)).split(micro_batch)]


def measured_peak(step, model, device):
    """Bytes alive at the peak of step() beyond weights and gradients, as torch's MemTracker counts real
    tensors (tracemalloc does not see torch's CPU allocations; --memory makes the same count with fake
    tensors)."""
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        step()
    peak = next(v for k, v in tracker.get_tracker_snapshot("peak").items() if k.type == device.split(":")[0])
    return sum(v for k, v in peak.items() if k != "Total" and k.value in ("Activation", "Temp", "Other"))


def bench_update(ours, hf, rows, micro_batch, amp, args, repeat):
    """Print the update's real tokens/s and peak memory, nanoRFT next to transformers, on the same rows.
    The peak is the largest micro-batch's: only gradients outlive a micro-batch."""
    ours_steps, hf_steps = ours_update(ours, rows, micro_batch, amp), hf_update(hf, rows, micro_batch, amp)
    m_ours = max(measured_peak(f, ours, args.device) for f in ours_steps)  # doubles as the warm-up
    m_hf = max(measured_peak(f, hf, args.device) for f in hf_steps)
    u_ours, u_hf = timeit([lambda: [f() for f in ours_steps], lambda: [f() for f in hf_steps]], args.device,
                          repeat, warmup=False)
    real = int(rows.valid.sum())
    print(f"  update   nanoRFT {real / u_ours:10.0f} tok/s   "
          f"transformers forward+backward {real / u_hf:6.0f} tok/s   ratio {u_hf / u_ours:.2f}x")
    print(f"  update peak memory (activations)   nanoRFT {m_ours / 2 ** 20:7.0f} MiB   transformers "
          f"{m_hf / 2 ** 20:7.0f} MiB   ratio {m_hf / m_ours:.2f}x")


def gsm8k_rows(vocab, prompts, n, seed=0):
    """Rollout rows shaped like a GSM8K step's: prompts of 60-200 tokens, n responses to each of 20-200
    tokens (well below the paper's max_new_tokens=1024: most stop early), left-padded and trimmed to the
    longest response as rollout.generate returns them; random token ids (the update's cost does not depend
    on them)."""
    g = torch.Generator().manual_seed(seed)
    prompt_lens = torch.randint(60, 201, (prompts,), generator=g).repeat_interleave(n)  # (N,)
    response_lens = torch.randint(20, 201, (prompts * n,), generator=g)  # (N,)
    P, R = int(prompt_lens.max()), int(response_lens.max())
    col = torch.arange(P + R)
    mask = (col >= P) & (col < P + response_lens[:, None])  # (N, P+R)
    valid = mask | ((col >= P - prompt_lens[:, None]) & (col < P))
    tokens = torch.randint(3, vocab, valid.shape, generator=g)
    tokens[:, :P] = tokens[::n, :P].repeat_interleave(n, 0)  # a prompt's n rows repeat it
    tokens = tokens.masked_fill(~valid, 0)
    return Rollout(tokens, mask, torch.zeros(valid.shape), valid, torch.ones(len(valid), dtype=torch.bool))


def bench_gsm8k(args, repeat=2):
    """The update at a GSM8K-like shape, small enough for a CPU: a random Qwen2 with Qwen2.5's vocabulary."""
    dt = dict(float32=torch.float32, bfloat16=torch.bfloat16)[args.dtype]
    cfg = Qwen2Config(vocab_size=151936, hidden_size=256, intermediate_size=768, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    with tempfile.TemporaryDirectory() as d:
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
        ours = Transformer.from_pretrained(d, dtype=dt, device=args.device).train()
        hf = AutoModelForCausalLM.from_pretrained(d, dtype=dt).to(args.device).train()
    rows = Rollout(*(x.to(args.device) for x in gsm8k_rows(cfg.vocab_size, prompts=2, n=8)))
    amp = lambda: torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.dtype == "bfloat16")
    lens = rows.mask.sum(1)
    print(f"\nGSM8K-like update: random Qwen2, {sum(p.numel() for p in ours.parameters()) / 1e6:.0f}M params "
          f"(vocab {cfg.vocab_size}, {cfg.num_hidden_layers} layers), {rows.tokens.size(0)} rows of "
          f"{int(rows.valid.sum())} real tokens ({int(lens.sum())} in responses of "
          f"{int(lens.min())}-{int(lens.max())}), batch width {rows.tokens.size(1)}, micro-batches of 8")
    bench_update(ours, hf, rows, 8, amp, args, repeat)
