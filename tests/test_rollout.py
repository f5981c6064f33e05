"""The sampler: greedy equals transformers' generate, log-probs equal the training forward, masks are right."""
import torch

from conftest import tiny_hf
from model import Transformer, token_logprobs
from rollout import generate, sample


def test_greedy_matches_transformers_generate(tmp_path):
    path, hf = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    prompts = torch.randint(1, 61, (3, 6))
    want = hf.generate(prompts, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)[:, 6:]
    ro = generate(model, prompts.tolist(), 1, 10, temperature=0.0)
    assert torch.equal(ro.tokens[:, 6:], want)
    assert ro.mask[:, 6:].all() and not ro.mask[:, :6].any()


def test_prompts_of_different_lengths_decode_as_if_alone(tmp_path):
    path, _ = tiny_hf("llama", tmp_path)
    model = Transformer.from_pretrained(path)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [3, 4], [12, 13, 14, 15]]
    batched = generate(model, prompts, 2, 8, temperature=0.0)
    for i, p in enumerate(prompts):
        alone = generate(model, [p], 1, 8, temperature=0.0)
        P = batched.tokens.size(1) - 8
        for j in (2 * i, 2 * i + 1):  # both samples of the prompt, greedy, are the prompt's greedy answer
            assert torch.equal(batched.tokens[j, P:], alone.tokens[0, len(p):])
            assert batched.valid[j, :P].sum() == len(p)


def test_sampler_logprobs_equal_training_forward(tmp_path):
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12], [13]]
    g = torch.Generator().manual_seed(0)
    ro = generate(model, prompts, 4, 12, temperature=0.8, eos_id=[2, 3], generator=g)
    with torch.no_grad():
        lp, _ = token_logprobs(model, ro.tokens, ro.valid, temperature=0.8)
    torch.testing.assert_close(lp[ro.mask], ro.logprobs[ro.mask], atol=1e-5, rtol=1e-5)
    assert (ro.logprobs[~ro.mask] == 0).all()


def test_stops_at_eos_and_masks_after_it(tmp_path):
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    g = torch.Generator().manual_seed(1)
    ro = generate(model, [[1, 2, 3]] * 4, 8, 20, temperature=1.5, eos_id=list(range(0, 61, 3)), generator=g)
    R = ro.tokens[:, 3:]
    m = ro.mask[:, 3:]
    for row, mrow, fin in zip(R, m, ro.finished):
        k = int(mrow.sum())
        assert mrow[:k].all() and not mrow[k:].any()  # one contiguous response
        stops = [t % 3 == 0 for t in row[:k].tolist()]
        assert not any(stops[:-1])  # nothing generated past a stop token
        assert stops[-1] == bool(fin)
        assert (row[k:] == 0).all()
    assert ro.finished.any() and (~ro.finished).any() is not None


def test_seeded_generator_reproduces_and_n_samples_differ(tmp_path):
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    run = lambda s: generate(model, [[4, 5, 6]], 16, 8, generator=torch.Generator().manual_seed(s)).tokens
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    assert len({tuple(r) for r in run(3).tolist()}) > 1  # the 16 samples of one prompt are not copies


def test_top_k_and_top_p_truncate():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    u = lambda: torch.rand(4000, generator=g)
    tok, lp = sample(logits, top_k=2, u=u())
    assert set(tok.tolist()) == {0, 1}
    torch.testing.assert_close(lp, torch.log(torch.tensor([0.5, 0.3]))[tok])  # untruncated policy's log-prob
    tok, _ = sample(logits, top_p=0.8, u=u())  # 0.5 + 0.3 reaches 0.8: the 0.15 and 0.05 go
    assert set(tok.tolist()) == {0, 1}
    tok, _ = sample(logits, top_p=0.81, u=u())
    assert set(tok.tolist()) == {0, 1, 2}
    tok, _ = sample(logits, u=u())  # plain sampling follows the distribution
    freq = torch.bincount(tok, minlength=4).float() / len(tok)
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03, rtol=0)


def test_per_prompt_generators_make_samples_independent_of_batching(tmp_path):
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    prompts = [[4, 5, 6], [7, 8], [9, 10, 11, 12]]
    gens = lambda ids: [torch.Generator().manual_seed(100 + i) for i in ids]
    together = generate(model, prompts, 3, 8, eos_id=[5, 6, 7], generator=gens(range(3)))
    P = together.tokens.size(1) - 8
    for i, p in enumerate(prompts):  # each prompt alone, as on another rank, samples the same responses
        alone = generate(model, [p], 3, 8, eos_id=[5, 6, 7], generator=gens([i]))
        assert torch.equal(alone.tokens[:, len(p):], together.tokens[3 * i:3 * i + 3, P:])
