"""The log-probs' fast paths equal the plain path: the chunked head's hand-written backward, chunked logits
and gradient checkpointing, the head run on the response only, prompts shared by a group's responses, and the
head's precision under bf16 autocast (an fp32 entropy, a bf16 reference model)."""
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_sums, tiny_hf
from machinery.head import ChunkedHead
from model import Transformer
from rollout import truncate
from test_model import padded_batch


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
