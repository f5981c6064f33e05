"""
Attention for the whole model in one call, and the KV cache it reads while sampling: FlashAttention-2 on a GPU
when it is installed, PyTorch SDPA otherwise.

The two differ in how they skip padding. SDPA takes a boolean mask. FlashAttention takes lengths:
for training, the real tokens of all rows packed into one row with sequence boundaries (varlen);
for decoding, where each row's keys start and end in the KV cache. `context` builds one of these
descriptions once per forward (and packs the rows when training with FlashAttention), every layer's
`attention` reads it, and `unpack` restores the (B, T) layout before the head. model.py sees none of it.

With SDPA, the update's rows that share a prompt (GRPO's n responses) compute it once: `shared_prompts`
finds the distinct prompts, the prompts' pass keeps each layer's keys and values, the responses' pass reads
them (`shared_prompt_contexts`). FlashAttention's packed rows have no padding to save but still repeat the
prompts (not yet measured on a GPU).
"""
import inspect
import sys
from typing import NamedTuple

import torch
import torch.nn.functional as F

try:  # optional, GPU only: FlashAttention-2 runs the packed training forward and decodes from the KV cache
    from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache
    if "cache_leftpad" not in inspect.signature(flash_attn_with_kvcache).parameters:  # older flash-attn
        print("flash-attn is too old to skip left padding in the KV cache: using PyTorch SDPA", file=sys.stderr)
        raise ImportError
except ImportError:
    flash_attn_varlen_func = flash_attn_with_kvcache = None


def use_flash(x):
    """FlashAttention needs it installed, CUDA tensors and half precision (dtype=bfloat16: autocast)."""
    return flash_attn_with_kvcache is not None and x.is_cuda and torch.is_autocast_enabled("cuda")


class KVCache:
    """Preallocated keys/values for all layers: (L, B, T_max, H_kv, D), FlashAttention's layout (SDPA reads
    it through a transposed view). Written in place, never grown."""

    def __init__(self, n_layer, batch, n_kv_head, max_len, head_dim, dtype, device):
        shape = (n_layer, batch, max_len, n_kv_head, head_dim)
        self.k = torch.empty(shape, dtype=dtype, device=device)  # every position is written before it is read
        self.v = torch.empty(shape, dtype=dtype, device=device)
        self.pos = 0  # number of positions filled so far (the same for every row: prompts are left-padded)

    def update(self, layer, k, v):
        """Store k, v (b, T, H_kv, D) at the current position; return what attention should see."""
        t0, t1 = self.pos, self.pos + k.size(1)
        _, B, _, H, D = self.k.shape
        n = B // k.size(0)
        if n > 1:
            # shared prefill: b prompts fill the rows of their n samples each (rows are prompt-major)
            self.k[layer, :, t0:t1].view(k.size(0), n, t1 - t0, H, D).copy_(k.unsqueeze(1).expand(-1, n, -1, -1, -1))
            self.v[layer, :, t0:t1].view(k.size(0), n, t1 - t0, H, D).copy_(v.unsqueeze(1).expand(-1, n, -1, -1, -1))
            return k, v
        self.k[layer, :, t0:t1] = k
        self.v[layer, :, t0:t1] = v
        return self.k[layer, :, :t1], self.v[layer, :, :t1]


class Context(NamedTuple):
    """How one forward's queries see their keys; at most one of mask / varlen / kv_span is set."""
    mask: torch.Tensor = None  # SDPA: (B, 1, T, T_keys) bool, True = may attend; None = plain causal
    cache: KVCache = None      # the keys and values of earlier tokens, to read and extend
    varlen: tuple = None       # FlashAttention training: (valid (B, T), cu_seqlens (B+1,) int32, max_len)
    kv_span: tuple = None      # FlashAttention decoding: (first, end) (B,) int32, each row's keys in the cache
    keep: dict = None          # shared prompts, the prompts' pass: {layer: (k, v)} for the responses' pass
    prefix: tuple = None       # shared prompts, the responses' pass: (keep, inverse (B,): each row's prompt)


def context(idx, pos, valid, cache):
    """idx, pos (B, T) token and position ids; valid (B, T_keys) bool, False on the left padding of the keys
    (the cache's and these tokens; None = no padding) -> (idx, pos, Context). With FlashAttention and no
    cache, idx and pos come back as one packed row (1, total) of the real tokens: no compute on padding."""
    B, T = idx.shape
    if use_flash(idx) and cache is None:  # training: rows are packed, sequence boundaries say where each ends
        valid = torch.ones_like(idx, dtype=torch.bool) if valid is None else valid
        lens = valid.sum(1)
        cu = F.pad(lens.cumsum(0), (1, 0)).to(torch.int32)  # (B+1,)
        return idx[valid][None], pos[valid][None], Context(varlen=(valid, cu, int(lens.max())))
    if use_flash(idx):  # decoding skips left padding by count: the last query is a real token, and its
        # position id says how many real tokens precede it
        end = torch.full((B,), cache.pos + T, dtype=torch.int32, device=idx.device)  # (B,) keys end here
        return idx, pos, Context(cache=cache, kv_span=(end - 1 - pos[:, -1].to(torch.int32), end))
    after_cache = cache is not None and cache.pos > 0 and T > 1  # SDPA's is_causal would align them to key 0
    # the sampler passes valid only when its prompts are padded: asking the device at every token would wait for it
    padded = valid is not None and (cache is not None or not bool(valid.all()))
    if after_cache or padded:
        valid = torch.ones(B, cache.pos + T, dtype=torch.bool, device=idx.device) if valid is None else valid
        return idx, pos, Context(mask=padded_causal_mask(valid, T), cache=cache)
    return idx, pos, Context(cache=cache)  # no padding: SDPA's causal kernel


def shared_prompts(tokens, valid, response):
    """tokens, valid, response (B, T) -> when rows repeat prompts (GRPO's n responses each) and every response
    starts at one column c (one sampler call's layout): (c, p_idx, p_valid (U, c), inverse (B,)), the U
    distinct prompts, left-padded, and each row's; else None. With FlashAttention rows are packed instead."""
    if response is None or use_flash(tokens) or not bool(response.any()):
        return None
    starts = response.int().argmax(1)  # (B,) each row's first response column (0 for a padding row)
    c = int(starts.max())
    if c == 0 or not bool((starts[response.any(1)] == c).all()):
        return None
    key = torch.where(valid[:, :c], tokens[:, :c], -1)  # (B, c): a prompt and its left padding
    p_key, inverse = torch.unique(key, dim=0, return_inverse=True)
    if p_key.size(0) == key.size(0):  # no prompt repeats: nothing to share
        return None
    p_valid = p_key >= 0
    return c, p_key.clamp(min=0), p_valid, inverse


def shared_prompt_contexts(p_valid, valid, inverse):
    """Contexts of a forward whose rows share prompts (SDPA only): the U distinct prompts (p_valid (U, T_p),
    left-padded) run once and keep each layer's keys and values; the responses (valid (B, T)) then attend to
    their own prompt's (inverse (B,)) and, causally, to themselves. Exact: the same keys as the full rows."""
    causal = None if bool(p_valid.all()) else padded_causal_mask(p_valid, p_valid.size(1))
    keep = {}
    keys = torch.cat([p_valid[inverse], valid], 1)  # (B, T_p + T)
    return Context(mask=causal, keep=keep), Context(mask=padded_causal_mask(keys, valid.size(1)),
                                                    prefix=(keep, inverse))


def padded_causal_mask(valid, T):
    """valid (B, T_keys) bool, False on left padding -> SDPA mask (B, 1, T, T_keys) for the last T of the keys
    as queries: each sees the real keys up to itself. A padding query may see itself, so its row is never
    empty (an all-False row gives NaN)."""
    Tk = valid.size(1)
    i = torch.arange(Tk - T, Tk, device=valid.device)[:, None]  # (T, 1): the queries' places among the keys
    j = torch.arange(Tk, device=valid.device)  # (T_keys,)
    return (j <= i) & (valid[:, None, None, :] | (j == i))


def attention(q, k, v, ctx, layer):
    """q (B, T, H, D), k, v (B, T, H_kv, D) of this forward's tokens -> (B, T, H, D): each query attends to
    the real keys up to itself, earlier ones read from ctx.cache (which stores k, v for `layer`)."""
    if ctx.varlen is not None or ctx.kv_span is not None:
        q, k = q.to(v.dtype), k.to(v.dtype)  # RoPE's fp32 cos/sin promote q, k; flash-attn wants v's bf16
    if ctx.varlen is not None:  # training: one packed row (B = 1) of sequences bounded by cu_seqlens
        _, cu, max_len = ctx.varlen
        return flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, max_len, max_len, causal=True)[None]
    if ctx.cache is not None:
        k, v = ctx.cache.update(layer, k, v)  # (B, T_keys, H_kv, D)
    if ctx.keep is not None:  # the shared prompts' pass: their responses' pass reads these
        ctx.keep[layer] = k, v
    if ctx.prefix is not None:  # the responses' pass: each row's prompt keys first, gathered (U -> B rows)
        keep, inverse = ctx.prefix
        k, v = torch.cat([keep[layer][0][inverse], k], 1), torch.cat([keep[layer][1][inverse], v], 1)
    if ctx.kv_span is not None:  # decoding: FlashAttention reads each row's keys [first, end) of the cache in place
        first, end = ctx.kv_span
        return flash_attn_with_kvcache(q, k, v, cache_seqlens=end, cache_leftpad=first, causal=True)
    causal = ctx.mask is None and q.size(1) > 1  # no mask: plain causal attention over unpadded rows
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=ctx.mask,
                                       is_causal=causal, enable_gqa=k.size(2) != q.size(2))  # (B, H, T, D)
    return y.transpose(1, 2)


def unpack(x, ctx):
    """Hidden states (1, total, D) of a packed row -> (B, T, D), zeros on padding; unpacked ones pass through."""
    if ctx.varlen is None:
        return x
    valid = ctx.varlen[0]
    return x.new_zeros(*valid.shape, x.size(-1)).masked_scatter(valid[..., None], x[0])
