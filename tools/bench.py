"""
Throughput of nanoRFT's sampler, update and rewards, side by side with transformers (and math-verify) on the
same work.

    python tools/bench.py                 # CPU, fp32, 1 thread: the figures in the README
    python tools/bench.py --device=cuda --dtype=bfloat16 --threads=0
    python tools/bench.py --gsm8k         # only the GSM8K-like update (about a minute on one CPU thread)
    python tools/bench.py --memory        # GPU memory of the paper's three models, estimated without a GPU
    python tools/bench.py --rewards       # reward.score's time per call under both graders, next to math-verify's
    python tools/bench.py --gpu           # on a GPU: the real kernels checked against fp32, tokens/s, peak memory

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

--memory runs one update micro-batch of each paper model under FakeTensorMode (shapes and dtypes,
no weights, no arithmetic) on the CPU with bf16 autocast, and torch's MemTracker adds up the
tensors alive at the peak. CPU autocast and SDPA keep what CUDA's do (bf16 matmul outputs, an
attention kernel that saves no T x T matrix), so this stands in for a GPU measurement; what it
cannot see is the CUDA caching allocator's fragmentation and the CUDA context (~0.5 GB).
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
from machinery.head import ChunkedHead
from model import Transformer, kv_cache_bytes, positions
from rollout import Rollout, generate


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
        ours = torch.compile(ours, dynamic=True)  # forwards attribute lookups (prefill, lm_head, ...) to the model
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
    print(f"  sampler  nanoRFT {n_tok / t_ours:10.0f} tok/s   transformers generate() {n_tok / t_hf:10.0f} tok/s"
          f"   ratio {t_hf / t_ours:.2f}x")
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
    """Bytes alive at the peak of step() beyond weights and gradients, as torch's MemTracker counts real tensors
    (tracemalloc does not see torch's CPU allocations; --memory makes the same count with fake tensors)."""
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
    u_ours, u_hf = timeit([lambda: [f() for f in ours_steps], lambda: [f() for f in hf_steps]], args.device, repeat,
                          warmup=False)
    real = int(rows.valid.sum())
    print(f"  update   nanoRFT {real / u_ours:10.0f} tok/s   transformers forward+backward {real / u_hf:6.0f} tok/s"
          f"   ratio {u_hf / u_ours:.2f}x")
    print(f"  update peak memory (activations)   nanoRFT {m_ours / 2 ** 20:7.0f} MiB   transformers "
          f"{m_hf / 2 ** 20:7.0f} MiB   ratio {m_hf / m_ours:.2f}x")


def gsm8k_rows(vocab, prompts, n, seed=0):
    """Rollout rows shaped like a GSM8K step's: prompts of 60-200 tokens, n responses to each of 20-200 tokens
    (well below the paper's max_new_tokens=1024: most stop early), left-padded and trimmed to the longest
    response as rollout.generate returns them; random token ids (the update's cost does not depend on them)."""
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
          f"{int(rows.valid.sum())} real tokens ({int(lens.sum())} in responses of {int(lens.min())}-{int(lens.max())}),"
          f" batch width {rows.tokens.size(1)}, micro-batches of 8")
    bench_update(ours, hf, rows, 8, amp, args, repeat)


def scored_everywhere(model, tokens):
    """The update's forward on full rows tokens (B, T), the head at every position -> log-probs (B * T,): what
    model(tokens, valid) runs, without the masks, whose data-dependent shapes FakeTensorMode cannot follow."""
    pos = torch.arange(tokens.size(1), device=tokens.device).expand(tokens.shape)
    h = model.model.norm(model.hidden(flash.context(tokens, pos, None, None))[0].flatten(0, 1))  # (B * T, D)
    return ChunkedHead.apply(h, model.lm_head.weight, tokens.flatten(), 1.0, False)


def update_peak(hf_config, micro_batch, seq_len, grad_checkpointing):
    """Bytes alive at the peak of one micro-batch's forward + backward (weights and gradients excluded),
    every row a full seq_len tokens: the worst case of a padded batch or a packed FlashAttention row."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    tokens = torch.zeros(micro_batch, seq_len, dtype=torch.long)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = Transformer(hf_config).train()
        model.grad_checkpointing = grad_checkpointing
        tracker = MemTracker()
        tracker.track_external(model)
        with tracker:
            with torch.autocast("cpu", dtype=torch.bfloat16):  # what dtype = "bfloat16" runs
                lp, _ = scored_everywhere(model, tokens)
            lp.sum().backward()
        peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
        return sum(v for k, v in peak.items() if k != "Total" and k.value in ("Activation", "Temp", "Other"))


def step_peak(hf_config):
    """Bytes alive at the peak of clip_grad_norm_ + AdamW.step beyond the 16 B/param of weights, gradients
    and moments: the temporaries of torch's foreach implementation, its default on CUDA."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    with FakeTensorMode():
        model = Transformer(hf_config)
        params = list(model.parameters())
        for p in params:
            p.grad = torch.zeros_like(p)
        opt = torch.optim.AdamW(params, foreach=True)
        opt.step()  # the moments exist from the first step on
        tracker = MemTracker()
        tracker.track_external(model, opt)
        with tracker:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"] - 16 * sum(p.numel() for p in params)


def memory(micro_batch=8, prompts=32, rollouts=8, prompt_len=512, new_tokens=1024):
    """The paper configs' GPU memory, in GiB, as the sum of what lives at the same time: fp32 weights,
    gradients and AdamW moments (16 B/param) throughout, plus the sampler's KV cache, or a micro-batch's
    forward + backward, or the optimizer step's temporaries."""
    gib, T = 2 ** 30, prompt_len + new_tokens
    print(f"one update micro-batch: {micro_batch} x {T} tokens, bf16 autocast; KV cache: {prompts} prompts x "
          f"{rollouts} rollouts x {T} tokens in bf16 (scales with sample_batch_size)")
    print(f"{'model':<25}{'params':>8}{'weights+grads+AdamW':>21}{'KV cache':>10}"
          f"{'fwd+bwd':>9}{'(grad_checkpointing)':>22}{'AdamW step':>12}")
    for hub_id, hf in PAPER_MODELS.items():
        name = hub_id.split("/")[1]
        with torch.device("meta"):
            n = sum(p.numel() for p in Transformer(hf).parameters())
        kv = kv_cache_bytes(hf, prompts * rollouts, T, torch.bfloat16)
        acts = [update_peak(hf, micro_batch, T, ckpt) for ckpt in (False, True)]
        print(f"{name:<25}{n / 1e9:>7.2f}B{16 * n / gib:>20.1f} {kv / gib:>9.1f}{(16 * n + acts[0]) / gib:>9.1f}"
              f"{(16 * n + acts[1]) / gib:>22.1f}{(16 * n + step_peak(hf)) / gib:>12.1f}")


def bench_rewards(repeat=5):
    """--rewards: median microseconds per reward.score call under each grader, MATH and GSM8K, next to
    math-verify's (called as verl calls it) when it is installed, and the worst time on 100 KB adversarial
    strings. MATH: the cases of tests/data/math_corpus.tsv, each prediction boxed at the end of a ~500-character
    solution; GSM8K: 400 endings ('#### 1,234', 'The answer is 72.', ...), right and wrong, against GSM8K-style
    solutions. A case's time is its best of `repeat` calls (math-verify: one call), so a busy machine blurs less."""
    import logging
    import random

    import reward
    solution = ("Let's think step by step. The first part gives $3 \\times 4 = 12$ and the second $12 + 7 = 19$, "
                "so what is left is $19 - 5 = 14$. ") * 4
    corpus = os.path.join(ROOT, "tests", "data", "math_corpus.tsv")
    rows = [line.rstrip("\n").split("\t") for line in open(corpus, encoding="utf-8") if not line.startswith("#")]
    cases = {"math": [(f"{solution}So the answer is $\\boxed{{{pred}}}$.", gold) for _, _, gold, pred in rows]}
    rng, cases["gsm8k"] = random.Random(0), []
    for _ in range(400):
        gold = rng.randrange(1, 10 ** 5)
        pred = rng.choice([gold, gold + rng.randrange(1, 10)])
        ending = rng.choice(["#### {}", "#### {:,}", "####{}", "#### ${}", "The answer is {}."]).format(pred)
        cases["gsm8k"].append((solution + ending, f"Half of it is <<{2 * gold}/2={gold}>>{gold}.\n#### {gold}"))
    n = 100_000
    adversarial = {"\\boxed{ repeated": ("\\boxed{" * n)[:n],
                   "deep braces": "\\boxed{" + "{" * (n // 2) + "}" * (n // 2) + "}",
                   "(1, repeated": "\\boxed{" + ("(1," * n)[:n] + "}", "digit/comma run": ("1234,5" * n)[:n],
                   "#### and a digit/comma run": "#### " + ("9,99" * n)[:n],
                   "nested \\frac": "\\boxed{" + "\\frac{" * (n // 12) + "1}{2}" * (n // 12) + "}"}
    graders = {g: lambda task, c, a, g=g: reward.score(task, c, a, grader=g) for g in reward.GRADERS}
    try:
        from math_verify.metric import math_metric
        from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig
        verify = math_metric(gold_extraction_target=(LatexExtractionConfig(),),
                             pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()))
        logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every answer it can't parse

        def math_verify(task, completion, answer):  # verl's math_verify.compute_score: the ground truth boxed
            try:
                return verify(["\\boxed{" + answer.split("####")[-1].strip() + "}"], [completion])[0]
            except Exception:
                return 0.0
        graders["math-verify"] = math_verify
    except ImportError:
        print("(math-verify is not installed: pip install math-verify to see it here)")

    def best(fn, *call, tries):
        t = float("inf")
        for _ in range(tries):
            t0 = time.perf_counter()
            fn(*call)
            t = min(t, time.perf_counter() - t0)
        return t

    print(f"reward.score: median us per call over {len(cases['math'])} MATH and {len(cases['gsm8k'])} GSM8K "
          f"cases; worst ms over {len(adversarial)} adversarial completions of 100 KB")
    print(f"{'grader':<13}{'MATH':>10}{'GSM8K':>10}{'adversarial':>14}  worst case")
    for name, fn in graders.items():
        tries = 1 if name == "math-verify" else repeat
        medians = [statistics.median(best(fn, task, c, a, tries=tries) for c, a in cases[task]) for task in cases]
        tasks = ["math"] if name == "math-verify" else list(cases)  # math-verify grades both tasks alike
        worst = max((best(fn, task, s, "72", tries=tries), what, task)
                    for what, s in adversarial.items() for task in tasks)
        print(f"{name:<13}{medians[0] * 1e6:>10.1f}{medians[1] * 1e6:>10.1f}{worst[0] * 1e3:>14.1f}"
              f"  {worst[1]} ({worst[2]})")


def gpu_smoke(steps=3, new_tokens=128):
    """--gpu, for the day a GPU is at hand: the paper config's work (Qwen2.5-0.5B-Instruct from the HF cache, else a
    random model of its shape) on the real kernels under bf16 autocast (flash-attn when installed, else SDPA): log-probs
    against fp32 SDPA (exit code 1 if they differ), tokens/s of the sampler and the update, peak memory."""
    if not torch.cuda.is_available():
        die("--gpu needs a CUDA device and torch sees none: run it on a machine with a GPU and torch's CUDA build")
    from huggingface_hub import try_to_load_from_cache
    hub_id = "Qwen/Qwen2.5-0.5B-Instruct"
    cached = try_to_load_from_cache(hub_id, "config.json")  # a path if downloaded before
    if isinstance(cached, str):
        model, source = Transformer.from_pretrained(os.path.dirname(cached), device="cuda"), "weights: HF cache"
    else:  # the kernels' agreement and speed need the shape, not the trained weights
        model, source = Transformer(PAPER_MODELS[hub_id]), "random weights of its shape (not in the HF cache)"
        model.init_weights()
        model.to("cuda")
    model.grad_checkpointing = True
    amp = lambda: torch.autocast("cuda", torch.bfloat16)
    rows = Rollout(*(x.to("cuda") for x in gsm8k_rows(model.cfg["vocab_size"], prompts=4, n=8)))
    worst, tol = logprob_check(model, rows, "cuda")
    torch.cuda.reset_peak_memory_stats()
    prompts = [row[valid].tolist() for row, valid in zip(rows.tokens[::8], rows.valid[::8])] * 8  # 32, 60-200 long
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
          f"log-probs vs fp32 SDPA: max |difference| {worst:.4f}, tolerance {tol:.4f} (3% of the largest |log-prob| "
          f"+ 1e-3, as tests/test_flash.py): {'ok' if worst <= tol else 'FAILED'}\n"
          f"sampler {32 * 8 * new_tokens / t_sample:9.0f} tok/s (32 prompts x 8, {new_tokens} new tokens)\n"
          f"update  {int(rows.valid.sum()) / t_update:9.0f} tok/s ({len(rows.tokens)} rows, micro-batches of 8, "
          f"grad_checkpointing, AdamW)\npeak memory {torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB")
    return 0 if worst <= tol else 1


def logprob_check(model, rows, device):
    """(max |difference|, tolerance) between the rows' response log-probs on the run's kernels (bf16 autocast:
    flash-attn when installed) and in fp32 on SDPA. bf16 keeps 8 bits and rounds in other places than fp32, so
    the tolerance is relative: 3% of the largest |log-prob|, plus 1e-3 for log-probs near 0 (tests/test_flash.py)."""
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
    p.add_argument("--rewards", action="store_true", help="reward.score's speed per grader, next to math-verify's")
    p.add_argument("--gpu", action="store_true", help="on a CUDA GPU: a few steps of the paper config's work on the "
                   "real kernels, log-probs checked against fp32 SDPA, tokens/s and peak memory")
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
    print(f"torch {torch.__version__}, device {args.device}, {args.dtype}, {torch.get_num_threads()} thread(s), "
          f"attention: {'flash-attn' if use_flash else 'PyTorch SDPA'}")
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
