"""
A batched, KV-cached sampler written out by hand (no transformers.generate).

Prompts of different lengths are left-padded into one batch so every row writes the same cache
position each step. Each prompt is prefilled once and its keys/values are copied to the rows
of its n samples. The cache and all outputs are allocated once, up front; the outputs come back
trimmed to the longest response sampled, so the update spends nothing on columns no row reached.
Each decode step is one call of the same shapes (model.decode): eager, or compiled with compile=True
(machinery/decode.py: CUDA graphs on a GPU).
"""
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from machinery.decode import decoder
from machinery.head import truncate

# decode steps between two checks that every row has stopped: the check makes the host wait for the device, so
# on a GPU it would drain the queue of kernels at every token; a CPU has no queue and checks every step
SYNC_EVERY = 16


class Rollout(NamedTuple):
    # P: the longest prompt; R: the longest response sampled (<= max_new_tokens); N = prompts * n, prompt-major
    tokens: torch.Tensor    # (N, P+R) long: left-padded prompt, then response, then zeros
    mask: torch.Tensor      # (N, P+R) bool: True on sampled response tokens (the stop token included)
    logprobs: torch.Tensor  # (N, P+R) float32: log-prob of each sampled token under the sampler, 0 elsewhere
    valid: torch.Tensor     # (N, P+R) bool: True on real tokens (prompt and response), False on padding
    finished: torch.Tensor  # (N,) bool: the response ended with a stop token (else cut at max_new_tokens)


def sample(logits, temperature=1.0, top_k=0, top_p=1.0, u=None, truncated=False):
    """logits (N, V) and uniforms u (N,) in [0, 1) -> next tokens (N,) and their log-probs (N,).
    The log-prob is under the temperature-scaled policy before top-k/top-p truncation (as in verl/TRL), or,
    truncated=True, under the truncated distribution drawn from (TRL PR 7269); the trainer recomputes the same.
    temperature=0 is greedy, with log-probs at temperature 1."""
    logits = logits.float()
    if temperature == 0:
        tok = logits.argmax(-1)
        return tok, F.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1)
    logits = logits / temperature
    kept = truncate(logits, top_k, top_p)  # (N, V): what is drawn from
    logp = F.log_softmax(kept if truncated else logits, -1)  # (N, V)
    logits = kept  # the full logits go before the softmax and its cumsum
    # inverse-CDF sampling with one uniform per row: ~20x cheaper on CPU than multinomial over a big vocab
    probs = logits.softmax(-1)  # (N, V)
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.size(0), device=cdf.device) if u is None else u
    tok = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).squeeze(1)  # first cdf > u: never p=0
    # NaN logits (a diverged policy) would index past the vocabulary: clamp, so that the update's NaN loss is what
    # stops the run (max_bad_steps), with its one line
    tok = tok.clamp_(max=cdf.size(-1) - 1)
    # CUDA's cumsum is a tree scan: a dropped token's prefix sum (p = 0) may come out an ulp above its neighbour's,
    # and be drawn. Never outside the kept set: the most likely kept token instead
    tok = torch.where(probs.gather(-1, tok[:, None]).squeeze(-1) > 0, tok, probs.argmax(-1))
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


@torch.no_grad()
def generate(model, prompts, n, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, eos_id=None,
             generator=None, truncated_logprobs=False, compile=False):
    """Sample n responses to each prompt (a list of token-id lists). eos_id: an id or a list of stop ids.
    truncated_logprobs: log-probs under the top-k/top-p distribution drawn from, not the full one (sample).
    generator: one torch.Generator for the batch, or a list of one numpy Generator per prompt
    (prompt_generators): each prompt's samples are then independent of how prompts are batched or sharded.
    compile: decode with the compiled step (machinery/decode.py), the same tokens up to float rounding.
    Returns a Rollout of N = len(prompts) * n rows, (N, P + R): P the longest prompt, R the longest response."""
    device = model.lm_head.weight.device
    B, P = len(prompts), max(len(p) for p in prompts)
    N = B * n
    # M >= N rows decode (compile rounds N up to a bucket: the rows past N idle, done from the start), on a zeroed
    # cache of T >= P + max_new_tokens columns (compile: the run's), with model.decode or its compiled form
    M, cache, decode = decoder(model, N, P + max_new_tokens, compile)
    T = cache.length  # the buffers below as wide as the cache: the same strides every call of a compiled step
    if isinstance(generator, (list, tuple)):  # every uniform the sampler will use, drawn up front: (N, R)
        u = torch.from_numpy(np.concatenate([g.random((n, max_new_tokens), dtype=np.float32) for g in generator]))
    else:
        u = torch.rand(N, max_new_tokens, generator=generator, device=generator.device if generator else "cpu")
    u = F.pad(u.to(device), (0, 0, 0, M - N))  # (M, R)
    stop = torch.tensor([] if eos_id is None else [eos_id] if isinstance(eos_id, int) else list(eos_id),
                        device=device, dtype=torch.long)
    tokens = torch.zeros(M, T, dtype=torch.long, device=device)
    valid = torch.zeros(M, T, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        tokens[i * n:(i + 1) * n, P - len(p):P] = torch.tensor(p, device=device)
        valid[i * n:(i + 1) * n, P - len(p):P] = True
    mask = torch.zeros(M, T, dtype=torch.bool, device=device)
    logprobs = torch.zeros(M, T, device=device)
    done = torch.arange(M, device=device) >= N
    padded = not bool(valid[:N, :P].all())
    keys = valid.clone()  # (M, T): the keys a decode step may read
    keys[:, P:] = True  # generated positions become attendable keys as they are written (the mask stops at col)
    keys[N:] = True  # idle rows attend to their own (zero) keys: finite
    pos = valid[:, :P].sum(1)  # (M,) position id of the first response token
    cols = torch.arange(P, P + max_new_tokens, device=device)  # (R,) each response token's cache column
    check_every = SYNC_EVERY if device.type == "cuda" else 1

    # one prefill per prompt (rows 0, n, 2n, ...), shared by its n samples through the cache
    logits = model.prefill(tokens[:N:n, :P], valid[:N:n, :P] if padded else None, cache, n)  # (B, V)
    logits = F.pad(logits.repeat_interleave(n, 0), (0, 0, 0, M - N))  # (M, V)
    for t in range(max_new_tokens):
        tok, lp = sample(logits, temperature, top_k, top_p, u[:, t], truncated_logprobs)
        live = ~done
        tokens[:, P + t] = tok.masked_fill(done, 0)
        logprobs[:, P + t] = lp.masked_fill(done, 0.0)
        mask[:, P + t] = live
        done = done | torch.isin(tok, stop)
        if t == max_new_tokens - 1 or (t + 1) % check_every == 0 and bool(done.all()):
            break  # steps run after every row stopped write nothing: the outputs are the same either way
        # EXERCISE kv_cache: the next logits (M, V) from one decode step of the tokens just sampled, at their
        # positions, written to cache column cols[t], keys masked by `keys` (tests: tests/test_rollout.py -k
        # "greedy_matches or logprobs_equal")
        logits = decode(tokens[:, P + t], pos + t, cols[t], keys, cache)
        # END EXERCISE
    width = P + int(mask[:N].sum(1).max())
    return Rollout(*(x[:N, :width].contiguous() for x in (tokens, mask, logprobs, valid | mask)), done[:N])


def pad_left(x, width):
    """(N, T) -> (N, width) with zeros/False on the left; other shapes pass through."""
    return F.pad(x, (width - x.size(1), 0)) if x.dim() == 2 else x


def cat(rollouts):
    """One Rollout from several (e.g. sampled in chunks), left-padded to a common width."""
    width = max(r.tokens.size(1) for r in rollouts)
    return Rollout(*(torch.cat([pad_left(getattr(r, f), width) for r in rollouts]) for f in Rollout._fields))


def prompt_generators(seed, kind, step, positions):
    """One random stream per prompt, keyed by (seed, kind, step, position in the batch): samples then do not
    depend on how prompts are batched or sharded over ranks, and a resumed run needs no sampler state. numpy's
    SeedSequence hashes all four numbers whole, so every key is its own stream (a torch CPU generator keeps only
    32 bits of its seed: packed into one integer, seeds and kinds would share their draws)."""
    return [np.random.default_rng([seed, kind, step, i]) for i in positions]


def completions(rollout, tok):
    """Decoded response texts (N,), without their stop token."""
    out = []
    rows = (rollout.tokens.cpu(), rollout.mask.cpu(), rollout.finished.cpu())  # one copy to the host, not one a row
    for row, m, fin in zip(*rows):
        ids = row[m].tolist()
        out.append(tok.decode(ids[:-1] if fin else ids, skip_special_tokens=False))
    return out
