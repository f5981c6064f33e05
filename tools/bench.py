"""
Throughput of nanoRFT's sampler, update and rewards, side by side with transformers (and math-verify) on the
same work.

    python tools/bench.py                 # CPU, fp32, 1 thread: the figures in docs/speed.md
    python tools/bench.py --device=cuda --dtype=bfloat16 --threads=0
    python tools/bench.py --gsm8k         # only the GSM8K-like update (about a minute on one CPU thread)
    python tools/bench.py --memory        # GPU memory of the paper's three models, without a GPU
    python tools/bench.py --rewards       # reward.score's time per call per grader, next to math-verify's
    python tools/bench.py --gpu           # on a GPU: the kernels checked against fp32, tokens/s, peak memory

Shapes: (1) the built-in task's policy at its default GRPO rollout shape, 32 prompts x 8 rollouts;
(2) a ~3M-parameter random Qwen2 at batch 64 with 64 new tokens. Both samplers produce exactly
max_new_tokens per row (no stop token), so they do the same work; the update takes the whole batch
at once. (3) The update alone at a GSM8K-like shape: a random Qwen2 with Qwen2.5's 152k vocabulary,
16 responses of mixed lengths to prompts of 60-200 tokens, micro-batches of 8 as in the paper configs.
The update is train.update's work (micro-batches grouped by length, log-probs of the response tokens,
backward) next to transformers' forward + backward as TRL's GRPOTrainer runs it (micro-batches in
batch order, logits over the response columns only); tokens/s count real tokens, prompts included.
Its peak memory is the activations and temporaries (weights and gradients excluded) that torch's
MemTracker counts over one update. Figures are medians of rounds.

--memory (bench_memory.py) measures the paper models' GPU memory under FakeTensorMode, without a GPU;
--rewards (bench_rewards.py) times reward.score; --gpu is docs/gpu.md's first-GPU checklist.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: the code this tool drives
sys.path.insert(0, ROOT)

import argparse
import statistics
import tempfile
import time

import torch
from torch.distributed._tools.mem_tracker import MemTracker
from transformers import AutoModelForCausalLM, Qwen2Config

from machinery import flash
from machinery.memory import PAPER_MODELS
from machinery.cli import die
from machinery.distributed import micro_batches
from model import Transformer, positions
from rollout import Rollout, generate

from bench_memory import memory
from bench_rewards import bench_rewards


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


def bench_shape(name, path, n_prompts, n, prompt_len, new_tokens, args):
    dt = dict(float32=torch.float32, bfloat16=torch.bfloat16)[args.dtype]
    ours = Transformer.from_pretrained(path, dtype=dt, device=args.device).eval()
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dt).to(args.device).eval()
    vocab = ours.cfg["vocab_size"]
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (n_prompts, prompt_len), generator=g).to(args.device)
    if args.compile:  # the sampler's two steps and the update's forward, each compiled
        ours.prefill = torch.compile(ours.prefill, dynamic=True)
        ours.decode = torch.compile(ours.decode, dynamic=True)
        ours = torch.compile(ours, dynamic=True)  # forwards attribute lookups (prefill, lm_head, ...)
    # bf16 runs under autocast too, as train.py's do: that is what routes CUDA attention to flash-attn
    amp = lambda: torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.dtype == "bfloat16")

    def ours_gen():
        with amp():
            return generate(ours, prompts.tolist(), n, new_tokens, temperature=1.0)
    hf_gen = lambda: hf.generate(prompts, do_sample=True, num_return_sequences=n, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0, top_k=None,
                                 top_p=None, temperature=1.0)
    n_tok = n_prompts * n * new_tokens
    t_ours, t_hf = timeit([ours_gen, hf_gen], args.device, args.repeat)

    print(f"\n{name}: {sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M params, {n_prompts} prompts x "
          f"{n} samples, {prompt_len} prompt + {new_tokens} new tokens")
    print(f"  sampler  nanoRFT {n_tok / t_ours:10.0f} tok/s   "
          f"transformers generate() {n_tok / t_hf:10.0f} tok/s   ratio {t_hf / t_ours:.2f}x")
    bench_update(ours, hf, ours_gen(), len(prompts) * n, amp, args, args.repeat)  # the whole batch at once


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


def gpu_smoke(steps=3, new_tokens=128):
    """--gpu, for the day a GPU is at hand: the paper config's work (Qwen2.5-0.5B-Instruct from the HF
    cache, else a random model of its shape) on the real kernels under bf16 autocast (flash-attn when
    installed, else SDPA): log-probs against fp32 SDPA (exit code 1 if they differ), tokens/s of the sampler
    and the update, peak memory."""
    if not torch.cuda.is_available():
        die("--gpu needs a CUDA device and torch sees none: "
            "run it on a machine with a GPU and torch's CUDA build")
    from huggingface_hub import try_to_load_from_cache
    hub_id = "Qwen/Qwen2.5-0.5B-Instruct"
    cached = try_to_load_from_cache(hub_id, "config.json")  # a path if downloaded before
    if isinstance(cached, str):
        model = Transformer.from_pretrained(os.path.dirname(cached), device="cuda")
        source = "weights: HF cache"
    else:  # the kernels' agreement and speed need the shape, not the trained weights
        model, source = Transformer(PAPER_MODELS[hub_id]), "random weights of its shape (not in the HF cache)"
        model.init_weights()
        model.to("cuda")
    model.grad_checkpointing = True
    amp = lambda: torch.autocast("cuda", torch.bfloat16)
    rows = Rollout(*(x.to("cuda") for x in gsm8k_rows(model.cfg["vocab_size"], prompts=4, n=8)))
    worst, tol = logprob_check(model, rows, "cuda")
    torch.cuda.reset_peak_memory_stats()
    # the rows' 4 prompts, 8 times: 32 prompts of 60-200 tokens
    prompts = [row[valid].tolist() for row, valid in zip(rows.tokens[::8], rows.valid[::8])] * 8
    with amp():  # 8 responses each, every row new_tokens long (no stop token)
        t_sample, = timeit([lambda: generate(model, prompts, 8, new_tokens)], "cuda", steps)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def update():
        for f in ours_update(model, rows, 8, amp):
            f()
        opt.step()
        opt.zero_grad(set_to_none=True)
    t_update, = timeit([update], "cuda", steps)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {hub_id} ({source}), attention: "
          f"{'flash-attn' if flash.flash_attn_with_kvcache is not None else 'PyTorch SDPA'}, bf16 autocast\n"
          f"log-probs vs fp32 SDPA: max |difference| {worst:.4f}, tolerance {tol:.4f} "
          f"(3% of the largest |log-prob| + 1e-3, as tests/test_flash.py): "
          f"{'ok' if worst <= tol else 'FAILED'}\n"
          f"sampler {32 * 8 * new_tokens / t_sample:9.0f} tok/s (32 prompts x 8, {new_tokens} new tokens)\n"
          f"update  {int(rows.valid.sum()) / t_update:9.0f} tok/s "
          f"({len(rows.tokens)} rows, micro-batches of 8, grad_checkpointing, AdamW)\n"
          f"peak memory {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB")
    return 0 if worst <= tol else 1


def logprob_check(model, rows, device):
    """(max |difference|, tolerance) between the rows' response log-probs on the run's kernels (bf16
    autocast: flash-attn when installed) and in fp32 on SDPA. bf16 keeps 8 bits and rounds in other places
    than fp32, so the tolerance is relative: 3% of the largest |log-prob|, plus 1e-3 for log-probs near 0
    (tests/test_flash.py)."""
    with torch.no_grad():
        with torch.autocast(device, torch.bfloat16):
            run, _ = model(rows.tokens, rows.valid, rows.mask)
        ref, _ = model(rows.tokens, rows.valid, rows.mask)  # no autocast: fp32, SDPA
    return (run - ref)[rows.mask].abs().max().item(), 0.03 * ref[rows.mask].abs().max().item() + 1e-3


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--repeat", type=int, default=15, help="timed rounds; medians are reported")
    p.add_argument("--compile", action="store_true", help="torch.compile nanoRFT's model")
    p.add_argument("--memory", action="store_true", help="estimate the paper models' GPU memory instead")
    p.add_argument("--gsm8k", action="store_true", help="only the update at the GSM8K-like shape")
    p.add_argument("--rewards", action="store_true",
                   help="reward.score's speed per grader, next to math-verify's")
    p.add_argument("--gpu", action="store_true", help="on a CUDA GPU: a few steps of the paper config's work "
                   "on the real kernels, log-probs checked against fp32 SDPA, tokens/s and peak memory")
    args = p.parse_args()
    if args.gpu:
        sys.exit(gpu_smoke())
    if args.rewards:
        return bench_rewards()
    if args.memory:
        return memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    use_flash = flash.flash_attn_with_kvcache is not None and args.device.startswith("cuda") \
        and args.dtype == "bfloat16"
    print(f"torch {torch.__version__}, device {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} thread(s), attention: {'flash-attn' if use_flash else 'PyTorch SDPA'}")
    if args.gsm8k:
        return bench_gsm8k(args)
    bench_shape("tiny-arith policy", "assets/tiny-arith", 32, 8, 8, 8, args)
    with tempfile.TemporaryDirectory() as d:
        cfg = Qwen2Config(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
        bench_shape("~3M Qwen2", d, 64, 1, 32, 64, args)
    bench_gsm8k(args)


if __name__ == "__main__":
    main()
