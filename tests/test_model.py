"""The hand-written transformer equals transformers' implementation, logits and cache included."""
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, assert_close_sums, tiny_hf
from machinery.head import ChunkedHead
from model import Transformer, apply_rope, kv_cache_bytes, load_tokenizer, positions
from rollout import truncate

FAMILIES = ["qwen2", "llama", "olmo2"]
ARITH = os.path.join(ROOT, "assets", "tiny-arith")


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family, tmp_path):
    path, hf = tiny_hf(family, tmp_path)
    ours = Transformer.from_pretrained(path)
    idx = torch.randint(0, 61, (3, 40))  # longer than llama3's original context 16, so the scaling matters
    with torch.no_grad():
        want = hf(idx).logits
        got = ours.logits(idx)
    assert got.shape == (3, 40, 61)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefill_then_decode_on_the_cache_match_each_row_alone(family, tmp_path):
    """The KV cache: a prefill of left-padded prompts, then one token at a time, give each row the logits of
    one forward over that row alone, unpadded; each call writes where the last one stopped."""
    path, _ = tiny_hf(family, tmp_path)
    model = Transformer.from_pretrained(path)
    idx = torch.randint(1, 61, (2, 14))
    valid = torch.ones(2, 14, dtype=torch.bool)
    valid[0, :3] = False  # row 0 is left-padded, as the sampler's shorter prompts are
    pos = positions(valid)
    with torch.no_grad():
        alone = model.logits(idx[:1, 3:])[0], model.logits(idx[1:])[0]  # (11, V), (14, V)
        cache = model.new_cache(2, 16)  # longer than needed: the columns past the one written are masked
        steps = [model.prefill(idx[:, :6], valid[:, :6], cache)]
        for t in range(6, 14):
            steps.append(model.decode(idx[:, t], pos[:, t], torch.tensor(t), F.pad(valid, (0, 2)), cache))
    assert not any(x[:, 14:].any() for x in cache.k + cache.v)  # written at columns 0..13 only
    got = torch.stack(steps, 1)  # (2, 9, V): the logits at columns 5..13
    torch.testing.assert_close(got[0], alone[0][2:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], alone[1][5:], atol=1e-5, rtol=1e-5)


def test_position_ids_start_at_each_rows_first_real_token():
    valid = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    assert positions(valid).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_rope_rotates_each_pair_counterclockwise_by_its_angle():
    """HF's rotate-half layout: dims i and i + D/2 form a pair, rotated by the angle pos * inv_freq[i]."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 4)  # pairs (1, 3) and (2, 4)
    a, b = torch.tensor(0.3), torch.tensor(0.05)
    cos, sin = torch.stack((a.cos(), b.cos(), a.cos(), b.cos())), torch.stack((a.sin(), b.sin(), a.sin(), b.sin()))
    got = apply_rope(x, cos.view(1, 1, 1, 4), sin.view(1, 1, 1, 4)).flatten()
    want = torch.stack((1 * a.cos() - 3 * a.sin(), 2 * b.cos() - 4 * b.sin(),
                        1 * a.sin() + 3 * a.cos(), 2 * b.sin() + 4 * b.cos()))
    torch.testing.assert_close(got, want)


def test_attention_sees_only_position_differences(tmp_path):
    """RoPE makes q.k depend on the distance between positions: shifting every position id leaves the
    logits alone, moving one token's position does not (tokens decoded one at a time at the given positions)."""
    path, _ = tiny_hf("llama", tmp_path)
    model = Transformer.from_pretrained(path)
    idx = torch.randint(0, 61, (2, 9))
    pos = torch.arange(9).expand(2, 9)

    def logits(pos):
        cache = model.new_cache(2, 9)
        return torch.stack([model.decode(idx[:, t], pos[:, t], torch.tensor(t), None, cache) for t in range(9)],
                           1)  # (2, 9, V)
    with torch.no_grad():
        want = logits(pos)
        torch.testing.assert_close(logits(pos + 5), want, atol=1e-5, rtol=1e-5)
        moved = pos.clone()
        moved[:, 4] = 5
        assert (logits(moved)[:, 4:] - want[:, 4:]).abs().max() > 1e-3


def test_left_padding_does_not_change_logits(tmp_path):
    """A left-padded prompt's prefill and a left-padded row's log-probs equal the unpadded row's; the padding's
    hidden states stay finite, so no NaN reaches the gradients."""
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    a = torch.randint(1, 61, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), a], 1)
    valid = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 9, dtype=torch.bool)], 1)
    with torch.no_grad():
        got = model.prefill(padded, valid, model.new_cache(1, 13))
        torch.testing.assert_close(got, model.logits(a)[:, -1], atol=1e-5, rtol=1e-5)
        want, _ = model(a, torch.ones_like(valid[:, 4:]))
    lp, _ = model(padded, valid)
    torch.testing.assert_close(lp[:, 4:], want, atol=1e-5, rtol=1e-5)
    lp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_save_pretrained_loads_in_transformers(family, tmp_path):
    from transformers import AutoModelForCausalLM
    path, _ = tiny_hf(family, tmp_path)
    ours = Transformer.from_pretrained(path)
    with torch.no_grad():  # change the weights so the test can't pass by reading the original files
        ours.model.norm.weight.mul_(1.5)
    ours.save_pretrained(str(tmp_path / "saved"))
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "saved")).eval()
    idx = torch.randint(0, 61, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours.logits(idx), atol=1e-5, rtol=1e-5)


def test_save_pretrained_keeps_the_base_models_generation_config(tmp_path):
    """Instruct models stop at end-of-turn ids and carry default sampling settings in generation_config.json,
    which vLLM and generate() apply: a checkpoint must keep them to stand in for the base model."""
    from transformers import GenerationConfig
    path, _ = tiny_hf("qwen2", tmp_path)
    GenerationConfig(eos_token_id=[2, 5], temperature=0.7, top_p=0.8, do_sample=True).save_pretrained(path)
    Transformer.from_pretrained(path).save_pretrained(str(tmp_path / "a"))
    Transformer.from_pretrained(str(tmp_path / "a")).save_pretrained(str(tmp_path / "b"))  # e.g. a resumed run's
    g = GenerationConfig.from_pretrained(str(tmp_path / "b"))
    assert (g.eos_token_id, g.temperature, g.top_p) == ([2, 5], 0.7, 0.8)


def test_logprobs_match_log_softmax(tmp_path):
    path, hf = tiny_hf("llama", tmp_path)
    model = Transformer.from_pretrained(path)
    idx = torch.randint(0, 61, (2, 7))
    valid = torch.ones_like(idx, dtype=torch.bool)
    with torch.no_grad():
        lp, ent = model(idx, valid, temperature=0.7)
        logp = torch.log_softmax(hf(idx).logits / 0.7, -1)
    want = logp[:, :-1].gather(-1, idx[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(lp[:, 1:], want, atol=1e-5, rtol=1e-5)
    assert (lp[:, 0] == 0).all()
    torch.testing.assert_close(ent[:, 1:], -(logp.exp() * logp).sum(-1)[:, :-1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk_tokens", [3, 1000])
@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("nucleus", [(0, 1.0), (5, 1.0), (0, 0.6), (20, 0.9)], ids=str)
def test_chunked_head_equals_autograd_through_log_softmax(chunk_tokens, autocast, nucleus, monkeypatch):
    """The head's hand-written backward: log-probs, entropies and the gradients of h and W equal autograd's
    through log_softmax, at a temperature, with per-token loss weights (advantages) and an entropy bonus,
    in one chunk or several, in fp32 and under bf16 autocast; with a nucleus, of the softmax over each row's
    top-k/top-p set and its target (truncated_logprobs)."""
    from machinery import head as head_lib
    monkeypatch.setattr(head_lib, "LOGIT_CHUNK", 97 * chunk_tokens)
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(10, 16, generator=g), torch.randn(97, 16, generator=g)
    targets, a, b = torch.randint(0, 97, (10,), generator=g), torch.randn(10, generator=g), torch.randn(10, generator=g)

    def reference(h, w):
        z = F.linear(h, w).float() / 0.7  # (10, 97)
        keep = torch.isfinite(truncate(z.detach(), *nucleus)).scatter(-1, targets[:, None], True)
        logp = torch.log_softmax(z.masked_fill(~keep, float("-inf")), -1).masked_fill(~keep, 0.0)
        return logp.gather(-1, targets[:, None]).squeeze(-1), -(logp.exp() * logp * keep).sum(-1)
    results = []
    for head in (reference, lambda h, w: ChunkedHead.apply(h, w, targets, 0.7, True, *nucleus)):
        h_, w_ = h.clone().requires_grad_(), w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logprobs, entropy = head(h_, w_)
        (a * logprobs + b * entropy).sum().backward()
        results.append((logprobs, entropy, h_.grad, w_.grad))
    tol = dict(atol=2e-2, rtol=2e-2) if autocast else dict(atol=1e-4, rtol=1e-4)  # float rounding of (10, 97) sums
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, **tol)
    assert not ChunkedHead.apply(h.requires_grad_(), w, targets, 1.0, False)[1].requires_grad  # no entropy graph


def test_a_batch_without_response_tokens_scores_nothing(tmp_path):
    """E.g. DDP's all-padding row alone in a micro-batch: zeros, and a backward that runs."""
    path, _ = tiny_hf("qwen2", tmp_path)
    m = Transformer.from_pretrained(path).train()
    tokens, valid = padded_batch()
    lp, ent = m(tokens, valid, torch.zeros_like(valid), entropy_grad=True)
    assert lp.shape == ent.shape == (3, 10) and not lp.any() and not ent.any()
    (lp.sum() + ent.sum()).backward()


def test_bad_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        Transformer.from_pretrained(str(tmp_path / "nope"))
    assert e.value.code == 2


def break_config(d):
    (d / "config.json").write_text((d / "config.json").read_text()[:50])


def drop_key(d):
    cfg = json.loads((d / "config.json").read_text())
    del cfg["hidden_size"]
    (d / "config.json").write_text(json.dumps(cfg))


def truncate_weights(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[:len(data) // 2])


def other_model(d):
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] += 8
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("breakage, named", [
    (lambda d: (d / "config.json").unlink(), "config.json is missing"),
    (break_config, "config.json is not a transformers model config"),
    (drop_key, "'hidden_size'"),
    (lambda d: (d / "model.safetensors").unlink(), "no *.safetensors"),
    (truncate_weights, "model.safetensors is truncated or corrupt"),
    (other_model, "from different models"),
])
def test_broken_model_dir_ends_with_one_line_naming_the_file(breakage, named, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(ARITH, d)
    breakage(d)
    with pytest.raises(SystemExit) as e:
        Transformer.from_pretrained(str(d))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and named in err, err


def test_model_dir_without_tokenizer_ends_with_one_line(tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(ARITH, d)
    tok = load_tokenizer(str(d))
    assert tok.decode(tok.encode("1+2=3")) == "1+2=3"
    (d / "tokenizer.json").write_text("{not json")
    with pytest.raises(SystemExit):
        load_tokenizer(str(d))
    for f in d.glob("tokenizer*"):
        f.unlink()
    with pytest.raises(SystemExit) as e:
        load_tokenizer(str(d))
    lines = capsys.readouterr().err.splitlines()
    assert e.value.code == 2 and len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert f"the tokenizer in {d} does not load (JSONDecodeError" in lines[0]
    assert "has no tokenizer files" in lines[1] and str(d) in lines[1]


def test_kv_cache_size_is_known_before_allocating(tmp_path):
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    cache = model.new_cache(3, 17)
    assert kv_cache_bytes(model, 3, 17, torch.float32) == cache.buffer.nbytes == 2 * 2 * 3 * 17 * 2 * 8 * 4
    hf = json.loads(open(os.path.join(path, "config.json")).read())
    half = cache.buffer.nbytes // 2
    assert kv_cache_bytes(hf, 3, 17, "bfloat16") == kv_cache_bytes(model.cfg, 3, 17, torch.bfloat16) == half
    assert model.cfg["max_positions"] == 256  # so a run can refuse prompt + max_new_tokens beyond it


def padded_batch():
    """Left-padded prompts and right-padded responses, as the sampler returns them."""
    tokens = torch.randint(1, 61, (3, 10), generator=torch.Generator().manual_seed(0))
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[0, :3] = False  # left padding
    valid[1, 8:] = False  # right padding after a stop token
    valid[2, :1] = False
    valid[2, 7:] = False
    return tokens.masked_fill(~valid, 0), valid


def test_chunked_logprobs_and_checkpointing_match_the_plain_path(tmp_path, monkeypatch):
    from machinery import head as head_lib
    path, _ = tiny_hf("olmo2", tmp_path)
    tokens, valid = padded_batch()

    def run(chunk, ckpt):
        m = Transformer.from_pretrained(path).train()
        m.grad_checkpointing = ckpt
        monkeypatch.setattr(head_lib, "LOGIT_CHUNK", chunk)
        lp, ent = m(tokens, valid, entropy_grad=True)
        (lp.sum() + ent.sum()).backward()
        return lp, ent, [p.grad for p in m.parameters()]
    want = run(2 ** 27, False)
    for chunk, ckpt in ((61 * 4, False), (2 ** 27, True), (61 * 7, True)):  # 4 and 7 tokens per chunk
        got = run(chunk, ckpt)
        # chunks change the order of float32 sums: over the 61 logits of a token (a log-prob) and over its 61
        # logits for each of the 30 tokens (a gradient entry); a missed token moves a gradient by ~1/30 of it
        for g, w, n in zip(got, want, (61, 61)):
            assert_close_sums(g, w, n)
        for g, w in zip(got[2], want[2]):
            assert_close_sums(g, w, 61 * 30)
    lp = want[0]
    assert (lp[~valid] == 0).all() and (lp[:, 0] == 0).all() and lp[0, 3] == 0 and lp[2, 1] == 0


def test_logprobs_of_the_response_only_equal_the_full_ones_there(tmp_path):
    """response= runs the head only where the loss needs it: the same log-probs, entropies and gradients at
    the response tokens, zeros elsewhere (also at a response token that nothing real precedes)."""
    path, _ = tiny_hf("qwen2", tmp_path)
    tokens, valid = padded_batch()
    response = valid & (torch.arange(10) >= 6)
    response[1, 0] = True  # a row's first token: nothing predicts it
    m = Transformer.from_pretrained(path).train()

    def run(resp):
        m.zero_grad()
        lp, ent = m(tokens, valid, resp, temperature=0.8, entropy_grad=True)
        ((lp * response).sum() + 0.1 * (ent * response).sum()).backward()
        return lp.detach(), ent.detach(), [p.grad.clone() for p in m.parameters()]
    full = run(None)
    head_rows = []
    m.model.norm.register_forward_hook(lambda module, args, out: head_rows.append(len(args[0])))  # the head's input
    lp, ent, grads = run(response)
    assert head_rows == [int(response[:, 1:].sum())]  # 7 response tokens, not all 18 that follow a real one
    predicted = response.clone()
    predicted[1, 0] = False
    assert (lp[~predicted] == 0).all() and (ent[~predicted] == 0).all() and (lp[predicted] < 0).all()
    # the head over 7 rows instead of 30: float32 sums in another order (assert_close_sums: 61 logits per
    # log-prob, 61 logits times 30 tokens per gradient entry)
    assert_close_sums(lp, full[0] * predicted, 61)
    assert_close_sums(ent, full[1] * predicted, 61)
    for g, w in zip(grads, full[2]):
        assert_close_sums(g, w, 61 * 30)


def grpo_batch():
    """3 prompts of 5, 3 and 1 tokens (left-padded to 5), 3 responses each of 1-4 tokens (right-padded), rows
    shuffled, then an all-padding row: one sampler call's layout, responses from column 5."""
    g = torch.Generator().manual_seed(0)
    rows, valid, response = [], [], []
    for p_len in (5, 3, 1):
        prompt = torch.randint(1, 61, (p_len,), generator=g)
        for r_len in (4, 1, 3):
            tok = torch.zeros(9, dtype=torch.long)
            tok[5 - p_len:5], tok[5:5 + r_len] = prompt, torch.randint(1, 61, (r_len,), generator=g)
            rows.append(tok)
            valid.append((torch.arange(9) >= 5 - p_len) & (torch.arange(9) < 5 + r_len))
            response.append((torch.arange(9) >= 5) & (torch.arange(9) < 5 + r_len))
    order = torch.randperm(9, generator=g)
    pad = torch.zeros(1, 9, dtype=torch.bool)
    return (torch.cat([torch.stack(rows)[order], pad.long()]), torch.cat([torch.stack(valid)[order], pad]),
            torch.cat([torch.stack(response)[order], pad]))


@pytest.mark.parametrize("family,ckpt", [("qwen2", False), ("llama", False), ("olmo2", False), ("qwen2", True)])
def test_shared_prompts_give_the_full_rows_logprobs_and_gradients(family, ckpt, tmp_path, monkeypatch):
    """GRPO's n responses per prompt: each distinct prompt runs once and its responses read its keys and
    values. The same log-probs, entropies and gradients as running every full row (to float order)."""
    from machinery import flash
    path, _ = tiny_hf(family, tmp_path)
    tokens, valid, response = grpo_batch()
    m = Transformer.from_pretrained(path).train()
    m.grad_checkpointing = ckpt
    embedded = []
    m.model.embed_tokens.register_forward_hook(lambda module, args, out: embedded.append(tuple(args[0].shape)))

    def run():
        m.zero_grad()
        lp, ent = m(tokens, valid, response, temperature=0.8, entropy_grad=True)
        (lp.sum() + 0.1 * ent.sum()).backward()
        return lp.detach(), ent.detach(), [p.grad.clone() for p in m.parameters()]
    shared = run()
    assert embedded[:2] == [(4, 5), (10, 4)]  # 3 prompts + the padding row once, then 10 rows of responses
    embedded.clear()
    monkeypatch.setattr(flash, "shared_prompts", lambda *args: None)
    full = run()
    assert embedded[0] == (10, 9)
    assert (shared[0][response] < 0).all() and (shared[0][~response] == 0).all()
    # a prompt computed once instead of per row: float32 sums in another order (assert_close_sums: 61 logits per
    # log-prob, 61 logits times 90 tokens per gradient entry)
    for got, want in zip(shared[:2], full[:2]):
        assert_close_sums(got, want, 61)
    for g, w in zip(shared[2], full[2]):
        assert_close_sums(g, w, 61 * 90)


def test_prompts_are_not_shared_when_responses_start_in_different_columns():
    from machinery.flash import shared_prompts
    tokens, valid, response = grpo_batch()
    assert shared_prompts(tokens, valid, response)[0] == 5
    late = response.clone()
    late[0] = F.pad(response[0, :-1], (1, 0))  # row 0's response starts a column later
    assert shared_prompts(tokens, valid, late) is None
    assert shared_prompts(tokens, valid, None) is None  # no response mask: all tokens are wanted
    lengths = valid[:9, :5].sum(1).tolist()
    one_each = [lengths.index(n) for n in (5, 3, 1)]  # one row of each prompt: nothing repeats
    assert shared_prompts(tokens[one_each], valid[one_each], response[one_each]) is None


def test_entropy_is_fp32_under_bf16_autocast():
    """Under bf16 autocast the head's logits are bf16 (the matmul), but the entropy is computed from them in fp32:
    it equals the float64 entropy of the same logits within fp32 rounding. Bound: exp, the sums over V terms and
    the division each add at most (V + 4) u relative error (u = 2^-24, recursive summation), on terms of size up
    to 1 + |z| with z the logits minus their max, so |error| <= (V + 4) u (1 + 2 range(z)). A bf16 vecdot (what
    autocast makes of torch.linalg.vecdot) rounds its inputs and result to 8 bits: ~2^-9 of an entropy of ~5,
    which this bound catches (checked below, so the test can fail)."""
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(16, 32, generator=g), torch.randn(256, 32, generator=g) * 0.3  # (n, D), (V, D)
    targets = torch.randint(0, 256, (16,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, entropy = ChunkedHead.apply(h, w, targets, 0.7, False)
        z = F.linear(h, w).double() / 0.7  # (16, 256): the same bf16 logits, upcast exactly
    assert entropy.dtype == torch.float32
    want = torch.logsumexp(z, -1) - (z.softmax(-1) * z).sum(-1)  # float64 reference
    bound = (256 + 4) * 2.0 ** -24 * (1 + 2 * (z.amax(-1) - z.amin(-1)))  # (16,)
    assert ((entropy.double() - want).abs() <= bound).all()
    zs = (z - z.amax(-1, keepdim=True)).float()
    e = zs.exp()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = e.sum(-1).log() - torch.linalg.vecdot(e, zs) / e.sum(-1)  # the entropy as autocast computes it
    assert ((bf16.double() - want).abs() > bound).any()


@pytest.mark.parametrize("family", ["qwen2", "olmo2"])  # a head tied to the embedding, and one of its own
def test_a_bf16_reference_model_scores_as_its_fp32_copy_does(family, tmp_path):
    """precision.frozen_reference keeps the matmuls' weights in bf16, which autocast casts them to anyway: under
    bf16 autocast its log-probs are the fp32 model's bit for bit, at 2 bytes instead of 4 per matmul weight; the
    embedding (a tied head's weight) and the norms stay fp32."""
    from machinery.precision import frozen_reference
    path, _ = tiny_hf(family, tmp_path)
    fp32 = Transformer.from_pretrained(path)
    ref = frozen_reference(path, "bfloat16", "cpu")
    tokens, valid = padded_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(ref(tokens, valid)[0], fp32(tokens, valid)[0])
    low = {n for n, p in ref.named_parameters() if p.dtype == torch.bfloat16}
    assert low == {n for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear)
                   for n in (f"{n}.weight", f"{n}.bias") if n in dict(ref.named_parameters())}
    assert ref.model.embed_tokens.weight.dtype == torch.float32 and not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    assert frozen_reference(path, "float32", "cpu").lm_head.weight.dtype == torch.float32
