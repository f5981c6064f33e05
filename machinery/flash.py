"""
Attention for the whole model in one call, and the KV cache it reads while sampling: FlashAttention-2 on a GPU
when it is installed, PyTorch SDPA otherwise.

The two differ in how they skip padding. SDPA takes a boolean mask. FlashAttention takes lengths:
for training, the real tokens of all rows packed into one row with sequence boundaries (varlen);
for a prefill, where each row's keys start and end. `context` builds one of these descriptions once per
forward (and packs the rows when training with FlashAttention), every layer's `attention` reads it, and
`unpack` restores the (B, T) layout before the head. model.py sees none of it.

On CUDA, SDPA runs half precision in a fused kernel only if its inputs fit one (flash: no mask; memory-
efficient: no grouped-query heads); anything else falls to its math kernel, which keeps every intermediate
in fp32 (the docs of torch.nn.functional.scaled_dot_product_attention). So no call here passes enable_gqa:
a prefill and the update give SDPA keys and values repeated to every query head, in the compute dtype (as
transformers' repeat_kv), and a decode step folds each KV head's query heads into its query length
(`decode_attention`), so the memory-efficient kernel reads the cache in place.

A decode step (`decode_context`) is a function of tensors only, with shapes that do not change from token to
token: the cache is full length and zeroed, the column a token is written to is a tensor, and the mask covers
the whole cache. torch.compile captures it whole (machinery/decode.py).

With SDPA, the update's rows that share a prompt (GRPO's n responses) compute it once: `shared_prompts`
finds the distinct prompts, the prompts' pass keeps each layer's keys and values, the responses' pass reads
them (`shared_prompt_contexts`). FlashAttention's packed rows have no padding to save but still repeat the
prompts (not yet measured on a GPU).
"""
import importlib.util
import inspect
import sys
from typing import NamedTuple

import torch
import torch.nn.functional as F

from machinery.cli import first_line


def import_flash_attn():
    """FlashAttention-2's two kernels, or (None, None): not installed (silently: SDPA is the default), or installed
    but unusable, which is said once on stderr, with why (a build against another torch or CUDA fails here)."""
    if importlib.util.find_spec("flash_attn") is None:
        return None, None
    try:
        from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache
    except Exception as e:  # ImportError, an undefined symbol (OSError), a CUDA error: all end in SDPA
        print(f"flash-attn is installed but does not import ({type(e).__name__}: {first_line(e)}): using PyTorch "
              f"SDPA", file=sys.stderr)
        return None, None
    if "cache_leftpad" not in inspect.signature(flash_attn_with_kvcache).parameters:  # older flash-attn
        print("flash-attn is too old to skip left padding in the KV cache: using PyTorch SDPA", file=sys.stderr)
        return None, None
    return flash_attn_varlen_func, flash_attn_with_kvcache


# optional, GPU only: FlashAttention-2 runs the packed training forward and the prefill into the KV cache
flash_attn_varlen_func, flash_attn_with_kvcache = import_flash_attn()


def use_flash(x):
    """FlashAttention needs it installed, CUDA tensors and half precision (dtype=bfloat16: autocast)."""
    return flash_attn_with_kvcache is not None and x.is_cuda and torch.is_autocast_enabled("cuda")


class KVCache:
    """Keys and values of every layer: k[layer], v[layer] (rows, T, H_kv, D), FlashAttention's layout (SDPA reads
    transposed views), carved out of one zeroed buffer (2, L, rows, T, H_kv, D). Zeroed: a decode step attends over
    the whole length, and a column not yet written is masked, so its zeros weigh exactly nothing (uninitialized
    memory could hold a NaN, and 0 * NaN is NaN). Written in place, never grown: one address for a sampler call, or
    for a whole run when the decode step is compiled (machinery/decode.py passes the run's buffer). Whole tensors
    per layer, not views into one (L, ...) tensor: torch.compile writes those in place, where through a view it
    would copy the whole cache at every token."""

    def __init__(self, n_layer, rows, n_kv_head, length, head_dim, dtype, device, buffer=None):
        size = 2 * n_layer * rows * length * n_kv_head * head_dim
        if buffer is None:
            buffer = torch.empty(size, dtype=dtype, device=device)
        k, v = buffer[:size].zero_().view(2, n_layer, rows, length, n_kv_head, head_dim)
        self.k, self.v, self.length, self.buffer = list(k), list(v), length, buffer

    def prefill(self, layer, k, v, n):
        """The prompts' k, v (b, T, H_kv, D) into columns [0, T) of rows [0, b * n): each prompt's keys and values
        in the n rows of its samples (rows are prompt-major)."""
        b, T = k.shape[:2]
        for cache, x in ((self.k[layer], k), (self.v[layer], v)):
            cache[:b * n, :T].unflatten(0, (b, n)).copy_(x.unsqueeze(1).expand(-1, n, -1, -1, -1))

    def write(self, layer, col, k, v):
        """A decode step's k, v (rows, 1, H_kv, D) into column col (a () tensor: no host value, the same graph every
        token) -> the layer's keys and values (rows, T, H_kv, D), every column."""
        self.k[layer].index_copy_(1, col.view(1), k)
        self.v[layer].index_copy_(1, col.view(1), v)
        return self.k[layer], self.v[layer]


class Context(NamedTuple):
    """How one forward's queries see their keys; at most one of mask / varlen / kv_span is set."""
    mask: torch.Tensor = None  # SDPA: (B, 1, T, T_keys) bool, True = may attend; None = plain causal
    cache: KVCache = None      # a prefill writes the prompts' keys and values here; a decode step reads and writes
    copies: int = 1            # a prefill: rows of the cache per prompt (its n samples)
    col: torch.Tensor = None   # a decode step: () long, the cache column its token is written to
    varlen: tuple = None       # FlashAttention training: (valid (B, T), cu_seqlens (B+1,) int32, max_len)
    kv_span: tuple = None      # FlashAttention prefill: (first, end) (B,) int32, each row's keys
    keep: dict = None          # shared prompts, the prompts' pass: {layer: (k, v)} for the responses' pass
    prefix: tuple = None       # shared prompts, the responses' pass: (keep, inverse (B,): each row's prompt)


def context(idx, pos, valid, cache=None, copies=1):
    """idx, pos (B, T) token and position ids; valid (B, T) bool, False on left padding (None = no padding); a
    prefill's cache, which takes each row's keys and values `copies` times -> (idx, pos, Context). With
    FlashAttention and no cache, idx and pos come back as one packed row (1, total) of the real tokens: no compute
    on padding."""
    B, T = idx.shape
    if use_flash(idx) and cache is None:  # training: rows are packed, sequence boundaries say where each ends
        valid = torch.ones_like(idx, dtype=torch.bool) if valid is None else valid
        lens = valid.sum(1)
        cu = F.pad(lens.cumsum(0), (1, 0)).to(torch.int32)  # (B+1,)
        return idx[valid][None], pos[valid][None], Context(varlen=(valid, cu, int(lens.max())))
    if use_flash(idx):  # a prefill skips left padding by count: the last query is a real token, and its position
        # id says how many real tokens precede it
        end = torch.full((B,), T, dtype=torch.int32, device=idx.device)  # (B,) keys end here
        return idx, pos, Context(cache=cache, copies=copies, kv_span=(end - 1 - pos[:, -1].to(torch.int32), end))
    # the sampler passes valid only when its prompts are padded: asking the device at every call would wait for it
    padded = valid is not None and (cache is not None or not bool(valid.all()))
    mask = padded_causal_mask(valid, T) if padded else None  # None: SDPA's causal kernel
    return idx, pos, Context(mask=mask, cache=cache, copies=copies)


def decode_context(idx, pos, col, valid, cache):
    """A decode step's (idx, pos, Context): idx, pos (B, 1) each row's newest token and its position id; col () long
    tensor, the cache column it is written to; valid (B, T_cache) bool, False on the prompts' left padding (None =
    none). The mask is full length, the keys up to col: (B or 1, 1, 1, T_cache), the same shape every token."""
    mask = torch.arange(cache.length, device=idx.device) <= col  # (T_cache,)
    mask = mask if valid is None else valid & mask
    return idx, pos, Context(mask=mask.view(-1, 1, 1, mask.size(-1)), cache=cache, col=col)


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
    """q (B, T, H, D), k, v (B, T, H_kv, D) of this forward's tokens -> (B, T, H, D): each query attends to the
    real keys up to itself; a decode step's earlier keys are read from ctx.cache (which stores k, v for `layer`)."""
    q, k = q.to(v.dtype), k.to(v.dtype)  # RoPE's fp32 cos/sin promote q, k under autocast: one compute dtype
    if ctx.col is not None:  # a decode step: this token's keys and values into the cache, then the whole cache
        return decode_attention(q, *ctx.cache.write(layer, ctx.col, k, v), ctx.mask)
    if ctx.varlen is not None:  # training: one packed row (B = 1) of sequences bounded by cu_seqlens
        _, cu, max_len = ctx.varlen
        return flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, max_len, max_len, causal=True)[None]
    if ctx.cache is not None:  # a prefill: the prompts attend to themselves; their n samples will read these
        ctx.cache.prefill(layer, k, v, ctx.copies)
    if ctx.keep is not None:  # the shared prompts' pass: their responses' pass reads these
        ctx.keep[layer] = k, v
    if ctx.prefix is not None:  # the responses' pass: each row's prompt keys first, gathered (U -> B rows)
        keep, inverse = ctx.prefix
        k, v = torch.cat([keep[layer][0][inverse], k], 1), torch.cat([keep[layer][1][inverse], v], 1)
    if ctx.kv_span is not None:  # a prefill with FlashAttention: each row's keys [first, end), heads grouped
        first, end = ctx.kv_span
        return flash_attn_with_kvcache(q, k, v, cache_seqlens=end, cache_leftpad=first, causal=True)
    if k.size(2) != q.size(2):  # every query head its keys (transformers' repeat_kv), not enable_gqa: see above
        k, v = k.repeat_interleave(q.size(2) // k.size(2), 2), v.repeat_interleave(q.size(2) // k.size(2), 2)
    causal = ctx.mask is None and q.size(1) > 1  # no mask: plain causal attention over unpadded rows
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=ctx.mask,
                                       is_causal=causal)  # (B, H, T, D)
    return y.transpose(1, 2)


def decode_attention(q, k, v, mask):
    """q (B, 1, H, D) a decode step's queries; k, v (B, T, H_kv, D) the whole cache; mask (B, 1, 1, T) -> (B, 1, H,
    D). The H / H_kv query heads that share a KV head go in as that head's queries (one KV head per SDPA head,
    the mask broadcast over them): equal head counts, which CUDA's memory-efficient kernel takes, and each key
    read once, not repeated."""
    B, _, H, D = q.shape
    y = F.scaled_dot_product_attention(q.view(B, k.size(2), H // k.size(2), D), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=mask)  # (B, H_kv, H / H_kv, D)
    return y.view(B, 1, H, D)


def unpack(x, ctx):
    """Hidden states (1, total, D) of a packed row -> (B, T, D), zeros on padding; unpacked ones pass through."""
    if ctx.varlen is None:
        return x
    valid = ctx.varlen[0]
    return x.new_zeros(*valid.shape, x.size(-1)).masked_scatter(valid[..., None], x[0])
