"""
Numeric precision as a design choice: the autocast context the sampler and the trainer each run under, and the
optimizer step that fp16 needs (a dynamic loss scale). Weights and optimizer state stay float32 in every mode
(mixed precision: Micikevicius et al. 2018); only the matmuls' inputs and outputs are cast.

    float32    no autocast: the sampler and the trainer agree up to fp32 rounding (the update is on-policy)
    bfloat16   autocast bf16: fp32's range, 8 bits of mantissa; no scaler needed (verl's and the paper's default)
    float16    autocast fp16: 11 bits of mantissa but a small range, so the loss is scaled up before backward and
               the gradients down after it; a step whose scaled gradients overflowed is skipped and the scale
               halved (torch.amp.GradScaler; Precision-RL, Qi et al. 2025, and oat's --fp16 use fp16 so that
               sampler and trainer disagree less)

A sampler in another precision than the trainer (sampler_dtype) reproduces the sampler/trainer gap of an
inference engine on purpose; loss.mismatch measures it and loss.is_weights corrects it.
CPU autocast does bf16 and fp16 too (slowly: the tiny model's update runs 4-10x slower than in fp32 on a CPU).
"""
from contextlib import nullcontext

import torch

from machinery import distributed as ddp
from loss import is_weights, mismatch
from model import Transformer

DTYPES = ("float32", "bfloat16", "float16")
MIN_SCALE = 1.0  # below this fp16 loss scale even the unscaled gradients overflow: the scaler has given up


def autocast(device, dtype):
    """The context a forward runs under: autocast to dtype on device's kind (cpu, cuda), or none for float32."""
    if dtype == "float32":
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, dtype))


def frozen_reference(path, dtype, device):
    """The KL's frozen reference: the run's initial policy (path: its base model, also when resuming), loaded at
    about half the memory: the weights of its matmuls (not the embedding, which a tied head shares) in dtype's
    autocast type, which autocast casts them to at every use anyway, so its log-probs are the fp32 copy's bit for
    bit; embeddings and norms stay fp32, as the policy's."""
    model = Transformer.from_pretrained(path, device=device)
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    for module in model.modules():
        if dtype != "float32" and isinstance(module, torch.nn.Linear) and not (tied and module is model.lm_head):
            module.to(getattr(torch, dtype))
    return model.eval().requires_grad_(False)


def grad_scaler(device, dtype, saved=None):
    """A dynamic loss scaler for float16 (initial scale 2^16, halved after an overflow, doubled after 2000 clean
    steps: torch's defaults); for the other dtypes a disabled one, whose scale() and unscale_() do nothing.
    saved: a checkpoint's scaler state (train_state.pt), so a resumed run goes on at the scale it had reached."""
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=dtype == "float16")
    if saved and scaler.is_enabled():
        scaler.load_state_dict(saved)
    return scaler


def optimizer_step(opt, scaler, parameters, grad_clip):
    """Unscale the gradients, clip them, step, and let the scaler adapt. Returns (grad norm: a 0-dim tensor,
    stepped: whether the optimizer stepped, gave_up: whether the step counts as bad). A non-finite gradient
    norm skips the step: with fp16 that is the scaler's overflow check, and the skip is bad only once the scale
    has fallen below MIN_SCALE; without fp16 it is a diverged loss, bad at once (train.py's max_bad_steps)."""
    scaler.unscale_(opt)  # the true gradients, so the clip and the logged norm do not depend on the scale
    norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip if grad_clip > 0 else float("inf"))
    stepped = bool(torch.isfinite(norm))
    if stepped:
        scaler.step(opt)  # = opt.step(): the scaler found no inf either
    if not scaler.is_enabled():
        return norm, stepped, not stepped
    scaler.update()  # fp16: halve the scale after an overflow, grow it after a run of clean steps
    return norm, stepped, not stepped and scaler.get_scale() < MIN_SCALE


def trainer_logprobs(policy, rows, masks, micro_batch_size, temperature, nucleus, autocast):
    """The trainer's log-probs (N, T) of every row's trained tokens (masks (N, T)) before the update changes the
    policy: pi_old, for measuring the sampler/trainer gap and correcting it when the update goes off-policy (more
    than one minibatch or epoch). rows: the update's dict of (N, T) tensors; nucleus: (top_k, top_p) to score
    the truncated softmax, or (0, 1.0); autocast(): the trainer's context."""
    out = torch.zeros_like(rows["old_logprobs"])
    for ids, cols in ddp.micro_batches(torch.arange(len(out), device=out.device), rows["valid"], micro_batch_size):
        with torch.no_grad(), autocast():
            tokens, valid, mask = rows["tokens"][ids][:, cols], rows["valid"][ids][:, cols], masks[ids][:, cols]
            out[ids, cols] = policy(tokens, valid, mask, temperature=temperature, nucleus=nucleus)[0]
    return out


def gap_stats(pi_old, sampler_logprobs, masks, kind="none", cap=2.0):
    """The sampler/trainer gap of a step's rows, over all ranks' tokens (loss.mismatch): mismatch_kl (k3 per
    token), mismatch_frac (token ratios outside the band) and mismatch_max (largest sequence log-ratio); with
    an is_correction `kind`, is_cut: the fraction of tokens it cut (TIS: weight truncated at the cap C; MIS,
    M2PO: weight 0), from the same weights the update used (pi_old is the step's start for all of them)."""
    gap, n_tokens = mismatch(pi_old, sampler_logprobs, masks), max(ddp.all_sum(masks.sum().item()), 1.0)
    stats = dict(mismatch_kl=ddp.all_sum(gap["kl"]) / n_tokens, mismatch_frac=ddp.all_sum(gap["out"]) / n_tokens,
                 mismatch_max=max(ddp.gather_objects([gap["max"]])))
    if kind != "none":
        weights = is_weights(pi_old, sampler_logprobs, masks, kind=kind, cap=cap)  # (N, T)
        cut = weights >= cap if kind == "tis" else weights == 0
        stats["is_cut"] = ddp.all_sum((cut & (masks > 0)).sum().item()) / n_tokens
    return stats
