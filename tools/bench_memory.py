"""
bench.py --memory: the GPU memory of the paper's three models, measured without a GPU (docs/gpu.md's table).

One update micro-batch of each model runs under FakeTensorMode (shapes and dtypes, no weights, no
arithmetic) on the CPU with bf16 autocast, and torch's MemTracker adds up the tensors alive at the peak.
CPU autocast and SDPA keep what CUDA's do (bf16 matmul outputs, an attention kernel that saves no T x T
matrix), so this stands in for a GPU measurement; what it cannot see is the CUDA caching allocator's
fragmentation and the CUDA context (~0.5 GB). tests/tools/test_bench.py checks the fake count against real
tensors on a tiny model.
"""
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from machinery import flash
from machinery.head import ChunkedHead
from machinery.memory import PAPER_MODELS
from model import Transformer, kv_cache_bytes


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
        print(f"{name:<25}{n / 1e9:>7.2f}B{16 * n / gib:>20.1f} {kv / gib:>9.1f}"
              f"{(16 * n + acts[0]) / gib:>9.1f}{(16 * n + acts[1]) / gib:>22.1f}"
              f"{(16 * n + step_peak(hf)) / gib:>12.1f}")


def update_peak(hf_config, micro_batch, seq_len, grad_checkpointing):
    """Bytes alive at the peak of one micro-batch's forward + backward (weights and gradients excluded),
    every row a full seq_len tokens: the worst case of a padded batch or a packed FlashAttention row."""
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


def scored_everywhere(model, tokens):
    """The update's forward on full rows tokens (B, T), the head at every position -> log-probs (B * T,): what
    model(tokens, valid) runs, without the masks, whose data-dependent shapes FakeTensorMode cannot follow."""
    pos = torch.arange(tokens.size(1), device=tokens.device).expand(tokens.shape)
    h = model.model.norm(model.hidden(flash.context(tokens, pos, None, None))[0].flatten(0, 1))  # (B * T, D)
    return ChunkedHead.apply(h, model.lm_head.weight, tokens.flatten(), 1.0, False)


def step_peak(hf_config):
    """Bytes alive at the peak of clip_grad_norm_ + AdamW.step beyond the 16 B/param of weights, gradients
    and moments: the temporaries of torch's fused implementation, train.py's on CUDA (foreach, CUDA's default,
    keeps a temporary as large as the gradients)."""
    with FakeTensorMode():
        model = Transformer(hf_config)
        params = list(model.parameters())
        for p in params:
            p.grad = torch.zeros_like(p)
        opt = torch.optim.AdamW(params, fused=True)
        opt.step()  # the moments exist from the first step on
        tracker = MemTracker()
        tracker.track_external(model, opt)
        with tracker:
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
        return peak - 16 * sum(p.numel() for p in params)
