"""FlashAttention's two paths, checked on CPU: the packed varlen training forward and the prefill into the cache.

flash-attn runs on CUDA only, so these tests swap its two kernels for references written from its
documented semantics and its C++ argument checks (equal half-precision dtypes, contiguous last dim,
int32 lengths, shapes; `cache_seqlens` is where a row's keys end in the cache, `cache_leftpad` where
they start, as in flash-attn's block_info.h and its own tests' key_padding_mask, and causal masking
aligns the queries with the last keys). They prove that nanoRFT calls
the kernels with the right arguments and layouts; the kernels themselves are flash-attn's to test.
"""
import os

import pytest
import torch
from conftest import assert_close_sums, tiny_hf

from machinery import flash
from model import Transformer
from rollout import generate, prompt_generators
from test_model import padded_batch


def check(half, *tensors):
    for t in tensors:
        assert t.dtype == tensors[0].dtype, "query, key and value must have the same dtype"
        assert t.stride(-1) == 1, "tensors must have a contiguous last dimension"
    assert not half or tensors[0].dtype in (torch.float16, torch.bfloat16), "FlashAttention runs in fp16/bf16 only"


def attend(q, k, v, allowed):
    """q (B, Tq, H, D), k, v (B, Tk, H_kv, D), allowed (B, Tq, Tk) -> (B, Tq, H, D), in fp32.
    A query that may see no key gets zeros, as flash-attn's kernels return."""
    rep = q.size(2) // k.size(2)
    k, v = k.repeat_interleave(rep, 2).float(), v.repeat_interleave(rep, 2).float()
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), k) / q.size(-1) ** 0.5
    p = s.masked_fill(~allowed[:, None], float("-inf")).softmax(-1).nan_to_num(0.0)
    return torch.einsum("bhqk,bkhd->bqhd", p, v).to(q.dtype)


def fake_flash(monkeypatch, half):
    """Route flash.py to the reference kernels; returns the count of calls to each."""
    calls = {"varlen": 0, "kvcache": 0}

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, causal):
        check(half, q, k, v)
        assert q.dim() == 3 and cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32 and causal
        calls["varlen"] += 1
        out = []
        for a, b in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist()):
            assert b - a <= max_seqlen_q
            allowed = torch.ones(b - a, b - a, dtype=torch.bool).tril()[None]
            out.append(attend(q[None, a:b], k[None, a:b], v[None, a:b], allowed)[0])
        return torch.cat(out)  # (total, H, D)

    def flash_attn_with_kvcache(q, k_cache, v_cache, *, cache_seqlens, cache_leftpad, causal):
        check(half, q, k_cache, v_cache)
        B, Tq, H, D = q.shape
        Tk = k_cache.size(1)
        assert k_cache.shape == v_cache.shape == (B, Tk, k_cache.size(2), D) and H % k_cache.size(2) == 0
        assert cache_seqlens.dtype == cache_leftpad.dtype == torch.int32
        assert cache_seqlens.shape == cache_leftpad.shape == (B,) and causal
        assert (0 <= cache_leftpad).all() and (cache_leftpad < cache_seqlens).all() and (cache_seqlens <= Tk).all()
        calls["kvcache"] += 1
        j, i = torch.arange(Tk), torch.arange(Tq)[:, None]
        end, start = cache_seqlens[:, None, None], cache_leftpad[:, None, None]
        allowed = (j >= start) & (j < end) & (j <= i + end - Tq)  # (B, Tq, Tk): causal, bottom-right aligned
        return attend(q, k_cache, v_cache, allowed)

    monkeypatch.setattr(flash, "use_flash", lambda x: True)
    monkeypatch.setattr(flash, "flash_attn_varlen_func", flash_attn_varlen_func)
    monkeypatch.setattr(flash, "flash_attn_with_kvcache", flash_attn_with_kvcache)
    return calls


def test_sdpa_mask_shows_each_query_the_real_keys_up_to_itself():
    valid = torch.tensor([[False, True, True, True], [True, True, True, True]])  # keys: row 0 is left-padded
    assert flash.padded_causal_mask(valid, 2).tolist() == [  # the last 2 keys as queries, e.g. after a cache
        [[[False, True, True, False], [False, True, True, True]]],
        [[[True, True, True, False], [True, True, True, True]]]]
    assert flash.padded_causal_mask(valid, 4)[0, 0, 0].tolist() == [True, False, False, False]  # padding: itself


def logprobs_and_grads(m, tokens, valid, response=None):
    m.zero_grad()
    lp, ent = m(tokens, valid, response, temperature=0.9, entropy_grad=True)
    (lp.sum() + 0.1 * ent.sum()).backward()
    return lp.detach(), ent.detach(), [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("family", ["qwen2", "olmo2"])
def test_packed_varlen_training_forward_matches_padded_sdpa(family, tmp_path, monkeypatch):
    path, _ = tiny_hf(family, tmp_path)
    m = Transformer.from_pretrained(path).train()
    tokens, valid = padded_batch()
    want = logprobs_and_grads(m, tokens, valid)
    calls = fake_flash(monkeypatch, half=False)
    got = logprobs_and_grads(m, tokens, valid)
    assert calls["varlen"] == m.cfg["n_layer"]  # one packed call per layer, no SDPA fallback
    # packed rows add in another order than padded ones (assert_close_sums: 61 logits per log-prob, 61 logits
    # times 30 tokens per gradient entry)
    for g, w, n in zip((got[0], got[1], *got[2]), (want[0], want[1], *want[2]), (61, 61, *[61 * 30] * len(got[2]))):
        assert_close_sums(g, w, n)
    response = valid & (torch.arange(10) >= 5)  # the head at the response tokens only, as the update runs it
    got = logprobs_and_grads(m, tokens, valid, response)
    assert calls["varlen"] == 2 * m.cfg["n_layer"]
    torch.testing.assert_close(got[0], want[0] * response, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1] * response, atol=1e-5, rtol=1e-5)


PROMPTS = [[5, 9, 2, 7, 7, 3, 1], [4, 8], [11, 12, 13, 14]]  # different lengths: rows are left-padded


@pytest.mark.parametrize("family", ["qwen2", "llama", "olmo2"])
@pytest.mark.parametrize("n", [1, 3])  # n=1 prefills into the cache; n=3 prefills once per prompt, then copies
def test_a_flash_prefill_then_sdpa_decoding_matches_sdpa(family, n, tmp_path, monkeypatch):
    """The prefill runs in flash-attn's kernel; decode steps in SDPA's (one static step, flash-attn or not)."""
    path, _ = tiny_hf(family, tmp_path)
    m = Transformer.from_pretrained(path).eval()

    def sample():
        return generate(m, PROMPTS, n, 12, temperature=1.0, generator=prompt_generators(0, 0, 0, range(3)))
    want = sample()
    calls = fake_flash(monkeypatch, half=False)
    got = sample()
    assert calls["kvcache"] == m.cfg["n_layer"]  # the prefill, every layer
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.mask, want.mask)
    torch.testing.assert_close(got.logprobs, want.logprobs, atol=1e-5, rtol=1e-5)


def test_flash_paths_get_bf16_inputs_under_autocast(tmp_path, monkeypatch):
    """Under autocast, RoPE's fp32 cos/sin promote q and k to fp32 while v comes out of its projection in
    bf16; FlashAttention refuses mixed or fp32 inputs, so the model must hand it bf16 q, k and v."""
    path, _ = tiny_hf("qwen2", tmp_path)
    m = Transformer.from_pretrained(path)
    tokens, valid = padded_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_lp = m(tokens, valid)[0].detach()
        want = generate(m, PROMPTS, 2, 8, temperature=0)
        calls = fake_flash(monkeypatch, half=True)
        got_lp = m(tokens, valid)[0].detach()
        got = generate(m, PROMPTS, 2, 8, temperature=0)
    assert calls["varlen"] > 0 and calls["kvcache"] > 0
    torch.testing.assert_close(got_lp, want_lp, atol=0.05, rtol=0.05)  # bf16 rounding in different places
    torch.testing.assert_close(got.logprobs, want.logprobs, atol=0.05, rtol=0.05)


def teacher_forced(m, prompts, cont):
    """Prefill left-padded prompts, then feed cont (B, K) one token at a time through the KV cache, as the
    sampler does: logits (B, K + 1, V) of the last prompt position and each fed token."""
    B, P, K = len(prompts), max(map(len, prompts)), cont.size(1)
    device = cont.device
    tokens = torch.zeros(B, P, dtype=torch.long, device=device)
    valid = torch.zeros(B, P, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        tokens[i, P - len(p):] = torch.tensor(p, device=device)
        valid[i, P - len(p):] = True
    cache = m.new_cache(B, P + K)
    out = [m.prefill(tokens, valid, cache)]
    keys = torch.cat((valid, torch.ones(B, K, dtype=torch.bool, device=device)), 1)
    cols = torch.arange(P, P + K, device=device)
    for t in range(K):
        out.append(m.decode(cont[:, t], valid.sum(1) + t, cols[t], keys, cache))
    return torch.stack(out, 1).float()


def flash_vs_sdpa(path, device, monkeypatch):
    """(flash, SDPA) results of decoding and of the training forward + backward under bf16 autocast."""
    m = Transformer.from_pretrained(path, device=device)
    tokens, valid = (t.to(device) for t in padded_batch())
    cont = torch.randint(1, 61, (3, 6), generator=torch.Generator().manual_seed(0)).to(device)

    def run():
        m.zero_grad()
        with torch.autocast(device, dtype=torch.bfloat16):
            with torch.no_grad():
                logits = teacher_forced(m, PROMPTS, cont)
            lp, _ = m(tokens, valid)
        lp.sum().backward()
        return logits, lp.detach().float(), torch.cat([p.grad.flatten() for p in m.parameters()])
    with_flash = run()
    monkeypatch.setattr(flash, "use_flash", lambda x: False)
    return with_flash, run()


def assert_bf16_close(with_flash, sdpa):
    for a, b in zip(with_flash, sdpa):  # bf16 rounds in different places on the two paths
        assert (a - b).abs().max() <= 0.03 * b.abs().max() + 1e-3


def test_flash_vs_sdpa_check_on_cpu_with_the_reference_kernels(tmp_path, monkeypatch):
    """The check below, run here against the reference kernels: it must pass, and fail on a wrong leftpad."""
    path, _ = tiny_hf("qwen2", tmp_path)
    calls = fake_flash(monkeypatch, half=True)
    assert_bf16_close(*flash_vs_sdpa(path, "cpu", monkeypatch))
    assert calls["varlen"] and calls["kvcache"]
    fake_flash(monkeypatch, half=True)
    real = flash.flash_attn_with_kvcache
    monkeypatch.setattr(flash, "flash_attn_with_kvcache",
                        lambda q, k, v, *, cache_leftpad, **kw: real(q, k, v, cache_leftpad=cache_leftpad * 0, **kw))
    with pytest.raises(AssertionError):
        assert_bf16_close(*flash_vs_sdpa(path, "cpu", monkeypatch))


@pytest.mark.skipif(not (torch.cuda.is_available() and flash.flash_attn_with_kvcache is not None),
                    reason="needs a CUDA GPU and flash-attn")
@pytest.mark.parametrize("family", ["qwen2", "llama", "olmo2"])
def test_real_flash_attn_matches_sdpa_on_cuda(family, tmp_path, monkeypatch):
    path, _ = tiny_hf(family, tmp_path, hidden_size=256, num_attention_heads=4, num_key_value_heads=2)  # head_dim 64
    assert_bf16_close(*flash_vs_sdpa(path, "cuda", monkeypatch))


@pytest.mark.parametrize("package, said", [
    (None, ""),  # not installed: SDPA, nothing to say
    ("raise ImportError('libcudart.so.12: cannot open shared object file')",
     "flash-attn is installed but does not import (ImportError: libcudart.so.12: cannot open shared object file): "
     "using PyTorch SDPA\n"),
    ("raise OSError('undefined symbol: _ZN3c10')",
     "flash-attn is installed but does not import (OSError: undefined symbol: _ZN3c10): using PyTorch SDPA\n"),
    ("def flash_attn_varlen_func(): pass\ndef flash_attn_with_kvcache(q, k, v): pass",
     "flash-attn is too old to skip left padding in the KV cache: using PyTorch SDPA\n"),
], ids=["absent", "import_error", "undefined_symbol", "too_old"])
def test_a_flash_attn_that_does_not_import_is_said_once_with_why(package, said, tmp_path):
    """An installed flash-attn that fails to import (a build for another torch or CUDA) falls back to SDPA, and
    says so once, with the reason, on stderr: it is a different speed and memory, not a silent one."""
    import subprocess
    import sys
    from conftest import ROOT
    if package is not None:
        (tmp_path / "flash_attn").mkdir()
        (tmp_path / "flash_attn" / "__init__.py").write_text(package + "\n")
    code = "import machinery.flash as f, machinery.decode, model, rollout; assert f.flash_attn_with_kvcache is None"
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert p.returncode == 0 and p.stderr == said, p.stderr
