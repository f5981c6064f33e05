"""
The language-model head as the update needs it: log-probs of chosen tokens and the entropies at their positions,
from the final hidden states, in fp32, without all (tokens x vocabulary) logits at once. At a 152k vocabulary
the head's logits are most of an update's memory and much of its compute, so it runs only where the loss
needs it (Transformer.forward picks the response positions) and in chunks, with its own backward. The top-k /
top-p truncation lives here too, so that the sampler (rollout.py) and the update share one definition: with
train.py's truncated_logprobs the head scores the truncated distribution the sampler drew from.
"""
import torch
import torch.nn.functional as F

LOGIT_CHUNK = 2 ** 27  # fp32 logit elements materialized at once (512 MB)


class ChunkedHead(torch.autograd.Function):
    """h (n, D) final hidden states -> log-probs of targets (n,) and entropies (n,) under softmax(h W^T / T)
    (renormalized over each row's top_k / top_p set when either is on: kept), in fp32, at most LOGIT_CHUNK logits
    at a time. Backward writes d/dlogits = onehot - p itself; with several chunks it recomputes each one's
    probabilities from h and the log-normalizers (as Liger-Kernel's fused linear cross-entropy), so memory
    stays at about one chunk. In place: each pass over a chunk costs about a matmul."""

    @staticmethod
    def forward(ctx, h, weight, targets, temperature, entropy_grad, top_k=0, top_p=1.0):
        ctx.dtype = F.linear(h[:0], weight).dtype  # the matmul's precision: bf16 under autocast
        ctx.chunk = max(1, LOGIT_CHUNK // weight.size(0))  # tokens per chunk
        ctx.temperature, ctx.entropy_grad, ctx.nucleus = temperature, entropy_grad, (top_k, top_p)
        out = h.new_zeros(3, len(h), dtype=torch.float32)  # log-probs, entropies, log-normalizers
        for i in range(0, len(h), ctx.chunk):
            s = slice(i, i + ctx.chunk)
            z = kept(scaled_logits(h[s], weight, temperature), targets[s], top_k, top_p)  # (c, V)
            top = z.amax(-1, keepdim=True)  # (c, 1)
            target = z.gather(-1, targets[s, None]).squeeze(-1)
            e = z.sub_(top).exp()  # (c, V) unnormalized probabilities; z keeps the logits minus their max
            if top_k > 0 or top_p < 1.0:  # dropped tokens: e = 0 and z = -inf, whose product would be NaN
                z.nan_to_num_(neginf=0.0)
            total = e.sum(-1)
            out[0, s] = target - top.squeeze(-1) - total.log()  # log p(target) = z_t - logsumexp(z)
            # entropy = -sum p log p = log(total) - sum(e z) / total; linalg.vecdot is on autocast's bf16 list, so
            # autocast is off for it: fp32, and no bf16 copies of e and z (c, V)
            with torch.autocast(h.device.type, enabled=False):
                out[1, s] = total.log() - torch.linalg.vecdot(e, z) / total
            out[2, s] = top.squeeze(-1) + total.log()
        keep = 0 < len(h) <= ctx.chunk and any(ctx.needs_input_grad[:2])  # one chunk: keep it, skip the recompute
        ctx.probs = e.div_(total[:, None]) if keep else None
        logprobs, entropy, lse = out
        ctx.save_for_backward(h, weight, targets, lse, entropy)
        if not entropy_grad:  # no graph through the entropy unless a loss term uses it
            ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    def backward(ctx, grad_logprobs, grad_entropy):
        h, weight, targets, lse, entropy = ctx.saved_tensors
        w = weight.to(ctx.dtype)  # the forward's precision (autocast is off in backward)
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        for i in range(0, len(h), ctx.chunk):
            s = slice(i, i + ctx.chunk)
            p = ctx.probs  # (c, V): kept from the forward, or recomputed from h and the log-normalizers
            if p is None:
                z = kept(scaled_logits(h[s].to(ctx.dtype), w, ctx.temperature), targets[s], *ctx.nucleus)
                p = z.sub_(lse[s, None]).exp_()
            ctx.probs = None
            g_lp = grad_logprobs[s, None] / ctx.temperature  # (c, 1): z = logits / T
            if ctx.entropy_grad:  # d entropy / dz = -p (log p + entropy); where p = 0 (dropped), p log p = 0
                g = p * p.log().nan_to_num_(neginf=0.0).add_(entropy[s, None]).mul_(
                    -grad_entropy[s, None] / ctx.temperature).sub_(g_lp)
            else:
                g = p.mul_(-g_lp)
            g = g.scatter_add_(-1, targets[s, None], g_lp).to(ctx.dtype)  # d log p_t / dz = onehot(t) - p
            grad_h[s] = (g @ w).to(h.dtype)
            grad_w += (g.t() @ h[s].to(ctx.dtype)).to(weight.dtype)
        return grad_h, grad_w, None, None, None, None, None


def kept(z, targets, top_k, top_p):
    """z (c, V) -> -inf outside each row's top-k/top-p set (truncate), so that the softmax is the truncated
    distribution the sampler drew from; z itself when neither is on. Each row's target stays in: the trainer's
    set can differ from the sampler's at rounding level, and a target's log-prob must not be log 0."""
    if top_k == 0 and top_p >= 1.0:
        return z
    return truncate(z, top_k, top_p).scatter_(-1, targets[:, None], z.gather(-1, targets[:, None]))


def truncate(logits, top_k=0, top_p=1.0):
    """logits (N, V) -> the same with -inf outside each row's top_k tokens and outside its nucleus: the most
    likely tokens until their probability mass reaches top_p (Holtzman et al. 2020; the top one always stays).
    The sampler draws from what is left (rollout.sample); with truncated_logprobs the update scores it (kept)."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.size(-1)), -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        # EXERCISE top_p: set logits to -inf outside each row's nucleus: the shortest run of its tokens sorted by
        # probability whose mass reaches top_p (ties cut by sort order, not kept as top-k's are) (tests:
        # tests/test_rollout.py -k top_p)
        sorted_logits, idx = logits.sort(-1, descending=True)
        p = sorted_logits.softmax(-1)
        drop = (p.cumsum(-1) - p) >= top_p  # the mass before a token already reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
        # END EXERCISE
    return logits


def scaled_logits(h, weight, temperature):
    """h (c, D) -> fp32 logits / temperature (c, V), scaled in place."""
    z = F.linear(h, weight).float()
    return z.div_(temperature) if temperature != 1.0 else z
