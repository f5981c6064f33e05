"""
bench.py --gpu: the first-GPU checklist, on the paper config's work: Qwen2.5-0.5B-Instruct (its weights from the
Hugging Face cache, else random ones of its shape: kernels, speed and memory need the shape) under bf16 autocast,
the sampler at 32 prompts x 8 = 256 rows, the update in micro-batches of 8 with gradient checkpointing. It prints,
and exits 1 if one fails:
1. attention kernels: the SDPA backend of every attention call of a sampler call and of an update (the one torch
   picks for the call's inputs: torch._fused_sdp_choice), then the same work under sdpa_kernel with the math kernel
   excluded, which must run: in bf16 the math kernel keeps every intermediate in fp32;
2. decoding: tokens/s of the sampler, eager and compiled (machinery/decode.py: CUDA graphs), compile time apart;
3. the sampler/trainer gap: mismatch_kl (loss.mismatch: k3 of the trainer's recompute against the sampler's
   log-probs of the same tokens, both bf16), against the gap an inference engine has to its trainer;
4. peak memory against memory.py's estimate of the same work (an upper bound, by design).
tests/robustness/test_gpu_path.py runs it on the fake CUDA device with a tiny model: the host-side logic.
"""
import collections

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

import train
from bench_update import ours_update, timeit
from configurator import configure
from loss import mismatch
from machinery import memory
from rollout import generate

# k3 per token of vLLM's bf16 sampler against an FSDP trainer, the gap TIS corrects (Yao et al. 2025, "Your
# efficient RL framework secretly brings you off-policy RL training"): one code in one dtype should stay below it
MISMATCH_KL = 1e-3


class Backends(TorchFunctionMode):
    """Counts the SDPA backend (flash, efficient, math, ...) each scaled_dot_product_attention call gets."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.counts[SDPBackend(torch._fused_sdp_choice(*args, **kwargs)).name.lower()] += 1
        return func(*args, **kwargs)


def checklist(model, source, rows, prompts, n=8, new_tokens=128, repeat=3):
    """The checks above on `model` (on cuda): rows, the update's Rollout; prompts (token-id lists), n samples each.
    Returns the exit code: 0 if every check passed."""
    amp = lambda: torch.autocast("cuda", torch.bfloat16)
    model.grad_checkpointing = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=True)
    torch.cuda.reset_peak_memory_stats()

    def sample(tokens=new_tokens, compile=False):
        with amp():
            return generate(model, prompts, n, tokens, generator=torch.Generator().manual_seed(0), compile=compile)

    def update():
        for step in ours_update(model, rows, 8, amp):
            step()
        opt.step()
        opt.zero_grad(set_to_none=True)
    failed = []
    with Backends() as seen:  # 1. the kernels: a short sampler call and an update
        sample(8)
        update()
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
            sample(8)
            update()
        fused = "ok"
    except RuntimeError as e:
        fused, failed = f"FAILED ({str(e).splitlines()[0]})", failed + ["kernels"]
    t_eager, = timeit([sample], "cuda", repeat)  # 2. decoding, eager and compiled
    t_compile, = timeit([lambda: sample(compile=True)], "cuda", 1, warmup=False)
    t_compiled, = timeit([lambda: sample(compile=True)], "cuda", repeat)
    rollout = sample()  # 3. the gap: the trainer's recompute of the sampler's tokens
    with torch.no_grad(), amp():
        trainer, _ = model(rollout.tokens, rollout.valid, rollout.mask)
    gap = mismatch(trainer, rollout.logprobs, rollout.mask)["kl"] / max(1, int(rollout.mask.sum()))
    failed += ["mismatch_kl"] if not gap <= MISMATCH_KL else []
    c = configure({k: getattr(train, k) for k in train.config_keys}, [  # 4. memory: the estimate of this work
        "--dtype=bfloat16", "--grad_checkpointing=True", "--micro_batch_size=8", f"--batch_size={len(prompts)}",
        f"--rollouts={n}", f"--max_new_tokens={new_tokens}", "--eval_batch_size=1", "--compile=True"])
    seq_len = max(map(len, prompts)) + new_tokens
    estimate, phase = memory.estimate(memory.memory_terms(model.cfg, c, "cuda", seq_len, 1, 0, 1))
    peak = torch.cuda.max_memory_allocated()
    failed += ["memory"] if peak > estimate else []
    kernels = ", ".join(f"{k} {v}" for k, v in sorted(seen.counts.items()))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, Qwen/Qwen2.5-0.5B-Instruct ({source}), "
          f"bf16 autocast\n"
          f"1. attention kernels of a sampler call and an update: {kernels}"
          f"{'' if not seen.counts['math'] else '  (math: FAILED)'}; without the math kernel: {fused}\n"
          f"2. sampler, {len(prompts)} prompts x {n}, {new_tokens} new tokens: eager "
          f"{len(prompts) * n * new_tokens / t_eager:.0f} tok/s, compiled "
          f"{len(prompts) * n * new_tokens / t_compiled:.0f} tok/s (first call {t_compile:.0f} s: the compile)\n"
          f"3. sampler/trainer gap, both bf16: mismatch_kl {gap:.2e} per token "
          f"({'ok' if gap <= MISMATCH_KL else 'FAILED'}: an inference engine's is ~{MISMATCH_KL:.0e})\n"
          f"4. peak memory {peak / 2 ** 30:.2f} GiB, estimate {estimate / 2 ** 30:.2f} GiB (held + {phase}): "
          f"{'ok' if peak <= estimate else 'FAILED: the estimate is meant to bound it; see docs/gpu.md'}")
    failed += ["kernels"] if seen.counts["math"] else []
    print("all checks passed" if not failed else f"FAILED: {', '.join(sorted(set(failed)))}")
    return 1 if failed else 0
