"""The sampler: greedy equals transformers' generate, log-probs equal the training forward, masks are right."""
import pytest
import torch

from conftest import U32, tiny_hf
from model import Transformer
from machinery.decode import bucket, decoder
from rollout import generate, prompt_generators, sample, truncate


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
    """What the sampler reports is what the update recomputes (to 1e-5), on left-padded prompts of mixed
    lengths, n samples per prompt sharing a prefill, responses of mixed lengths over many decode steps, and
    top-k/top-p truncation (log-probs are under the untruncated policy)."""
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [13]]
    for top_k, top_p in ((0, 1.0), (20, 0.9)):
        g = torch.Generator().manual_seed(0)
        ro = generate(model, prompts, 4, 12, temperature=0.8, top_k=top_k, top_p=top_p, eos_id=[2, 3], generator=g)
        lengths = ro.mask.sum(1)
        assert (~ro.valid[:, :7]).any() and lengths.min() < lengths.max() and lengths.max() > 6  # what is tested
        with torch.no_grad():
            lp, _ = model(ro.tokens, ro.valid, temperature=0.8)
            lp_response, _ = model(ro.tokens, ro.valid, ro.mask, temperature=0.8)
        torch.testing.assert_close(lp[ro.mask], ro.logprobs[ro.mask], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lp_response, ro.logprobs, atol=1e-5, rtol=1e-5)
        assert (ro.logprobs[~ro.mask] == 0).all()


def test_rollout_is_trimmed_to_the_longest_response(tmp_path):
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    g = torch.Generator().manual_seed(2)
    ro = generate(model, [[1, 2, 3], [4]], 4, 40, temperature=1.5, eos_id=list(range(0, 61, 4)), generator=g)
    assert ro.finished.all()  # every row stopped well before 40 tokens
    assert ro.tokens.size(1) == 3 + int(ro.mask.sum(1).max()) < 3 + 40
    assert ro.mask[:, -1].any()  # the last column holds some row's last token
    assert all(x.shape == ro.tokens.shape and x.is_contiguous() for x in (ro.mask, ro.logprobs, ro.valid))


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


def test_truncated_logprobs_are_of_the_distribution_drawn_from():
    """truncated=True: log p / S, S the kept mass (hand-computed: top_k=2 keeps 0.8, top_p=0.81 keeps 0.95);
    the tokens drawn are the same as without it (one uniform per row)."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(1000, 1)
    u = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    for kw, mass in ((dict(top_k=2), 0.8), (dict(top_p=0.81), 0.95), (dict(top_k=3, top_p=0.7), 0.8)):
        tok, lp = sample(logits, u=u, truncated=True, **kw)
        assert torch.equal(tok, sample(logits, u=u, **kw)[0])
        torch.testing.assert_close(lp, torch.log(p[tok] / mass))
    tok, lp = sample(logits, u=u, truncated=True)  # nothing truncated: the full log-prob
    torch.testing.assert_close(lp, torch.log(p[tok]))


def test_top_p_keeps_the_smallest_set_of_most_likely_tokens_that_reaches_p():
    """The nucleus is a prefix of the tokens sorted by probability: its mass reaches top_p, and without
    its least likely token it would not. Checked on random distributions, where no mass equals p exactly."""
    g = torch.Generator().manual_seed(0)
    for top_p in (0.05, 0.3, 0.5, 0.9, 0.99):
        logits = torch.randn(200, 50, generator=g) * 2
        kept = truncate(logits, top_p=top_p) > float("-inf")  # (200, 50)
        p = logits.softmax(-1)
        mass = (p * kept).sum(-1)
        least = p.masked_fill(~kept, 2.0).min(-1).values  # the least likely kept token
        assert (mass >= top_p).all() and (mass - least < top_p).all()
        outside = p.masked_fill(kept, -1.0).max(-1).values  # the most likely token left out
        assert (outside <= least).all()
    assert (truncate(logits, top_k=3) > float("-inf")).sum(-1).eq(3).all()


def test_per_prompt_generators_make_samples_independent_of_batching(tmp_path):
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    prompts = [[4, 5, 6], [7, 8], [9, 10, 11, 12]]
    gens = lambda ids: prompt_generators(100, 0, 0, ids)
    together = generate(model, prompts, 3, 8, eos_id=[5, 6, 7], generator=gens(range(3)))
    P = 4  # the longest prompt; responses follow it, trimmed to the longest one
    for i, p in enumerate(prompts):  # each prompt alone, as on another rank, samples the same responses
        alone = generate(model, [p], 3, 8, eos_id=[5, 6, 7], generator=gens([i]))
        R = alone.tokens.size(1) - len(p)
        assert torch.equal(alone.tokens[:, len(p):], together.tokens[3 * i:3 * i + 3, P:P + R])
        assert not together.mask[3 * i:3 * i + 3, P + R:].any()


def test_top_p_at_an_exact_tie_keeps_the_tokens_that_reach_it_as_transformers_does():
    """Four equal logits give probabilities of exactly 0.25, so the mass of the first k tokens equals top_p
    exactly at 0.25, 0.5, 0.75: the nucleus stops there (it reaches top_p), as transformers' TopPLogitsWarper
    decides. Keeping one token more or one less at the tie (> for >=) fails here."""
    from transformers import TopPLogitsWarper
    logits = torch.zeros(1, 4)
    for top_p, kept in ((0.25, 1), (0.3, 2), (0.5, 2), (0.75, 3), (0.76, 4)):
        ours = int(torch.isfinite(truncate(logits, top_p=top_p)).sum())
        theirs = int(torch.isfinite(TopPLogitsWarper(top_p)(None, logits.clone())).sum())
        assert ours == theirs == kept, (top_p, ours, theirs)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """key (seed, kind, step, position) -> the tokens the sampler draws for one prompt under that key's stream."""
    model = Transformer.from_pretrained(tiny_hf("qwen2", tmp_path_factory.mktemp("m"))[0])
    return lambda key: generate(model, [[4, 5, 6]], 2, 16, temperature=2.0,
                                generator=prompt_generators(*key[:3], [key[3]])).tokens


@pytest.mark.parametrize("axis, a, b", [
    ("seed", (0, 0, 0, 0), (1, 0, 0, 0)),
    ("seed, far apart", (5, 0, 0, 0), (5 + 2 ** 40, 0, 0, 0)),
    ("kind: training vs evaluation", (0, 0, 3, 0), (0, 1, 3, 0)),
    ("kind: the train split vs the test split", (0, 1, 0, 7), (0, 2, 0, 7)),
    ("step past 256", (0, 0, 1, 0), (0, 0, 257, 0)),
    ("step past 2**24", (0, 0, 1, 0), (0, 0, 1 + 2 ** 24, 0)),
    ("position: rank 0's first prompt vs rank 1's", (0, 0, 0, 0), (0, 0, 0, 16)),
])
def test_each_seed_kind_step_and_position_is_its_own_stream(sampled, axis, a, b):
    """Keys that differ in any one of (seed, kind, step, position) sample different responses to the same prompt
    (32 tokens at T = 2 over 61 ids: equal by chance with probability far below 1e-9), however far apart their
    numbers are; the same key samples the same ones (a resumed run needs no sampler state)."""
    assert torch.equal(sampled(a), sampled(a))
    assert not torch.equal(sampled(a), sampled(b)), axis


def test_the_draw_never_leaves_the_kept_set(monkeypatch):
    """On CUDA cumsum is a tree scan: the prefix sum at a dropped token (p = 0) can come out an ulp above its
    neighbour's. Crafted here: top_k=1 keeps token 0 alone, the scan's last sums one ulp high, and a uniform just
    below 1 lands between: the draw falls back to the most likely kept token, never a dropped one."""
    real = torch.Tensor.cumsum

    def tree_scan(x, dim):
        out = real(x, dim)
        out[:, 2:] = torch.nextafter(out[:, 2:], torch.tensor(2.0))
        return out
    monkeypatch.setattr(torch.Tensor, "cumsum", tree_scan)
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    u = torch.tensor([1 - 2.0 ** -24])  # the largest float32 below 1: u * (1 + ulp) rounds to 1 = cdf[0]
    assert sample(logits, top_k=1, u=u)[0].tolist() == [0]
    assert sample(logits, u=u)[0].tolist() == [3]  # nothing dropped: the draw is as before


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A tiny Qwen2 (grouped-query heads) whose decode step torch.compile compiles once, for the tests below:
    (model, the compiled graphs so far). The first call has the longest prompt, so later calls fit its cache."""
    from torch._dynamo.utils import counters
    model = Transformer.from_pretrained(tiny_hf("qwen2", tmp_path_factory.mktemp("m"))[0])
    graphs = lambda: counters["stats"]["unique_graphs"]
    before = graphs()
    generate(model, [[5, 6, 7, 8, 9, 10, 11], [4, 8], [11, 12, 13]], 3, 12, compile=True)  # 9 rows: bucket 10
    assert graphs() - before == 1
    return model, graphs


@pytest.mark.parametrize("temperature, top_p", [(0.0, 1.0), (1.0, 1.0), (1.5, 0.9)], ids=["greedy", "T=1", "top_p"])
def test_compiled_decoding_samples_what_eager_decoding_does(compiled, temperature, top_p):
    """The compiled step is model.decode compiled (inductor fuses and reorders its float32 sums): the same tokens
    on these seeds, greedy and sampled, with idle rows (9 rows decode as 10); log-probs to the rounding of the
    logits (64 U32 of their size, as test_fake_cuda's bound), moved by at most twice that over T."""
    from test_fake_cuda import logit_size
    model, graphs = compiled
    before = graphs()
    for prompts, n in (([[5, 9, 2, 7, 7, 3, 1], [4, 8], [11, 12, 13]], 3), ([[1, 2], [3, 4, 5], [6], [7, 8], [9]], 2)):
        runs = [generate(model, prompts, n, 12, temperature=temperature, top_p=top_p, eos_id=[2, 3],
                         generator=prompt_generators(0, 0, 0, range(len(prompts))), compile=c) for c in (False, True)]
        assert torch.equal(runs[0].tokens, runs[1].tokens) and torch.equal(runs[0].mask, runs[1].mask)
        bound = 2 * 64 * U32 * logit_size(model) / max(temperature, 1.0)
        torch.testing.assert_close(runs[1].logprobs, runs[0].logprobs, atol=bound, rtol=0)
    assert graphs() == before  # 9 and 10 rows, other prompt lengths, other settings: no recompile


def test_the_compiled_step_runs_one_graph_for_every_token_and_call_of_a_bucket(compiled):
    """Zero recompiles: tokens differ only in tensor values (positions, the column written), calls of one bucket
    in nothing dynamo guards on; the cache keeps its address."""
    model, graphs = compiled
    before, buffer = graphs(), model.compiled_decode["buffer"]
    for prompts in ([[3, 4, 5, 6]] * 5, [[1], [2, 3], [4, 5, 6]] * 3):  # 10 and 9 rows: bucket 10
        generate(model, prompts, 2 if len(prompts) == 5 else 1, 12, compile=True)
    assert graphs() == before and model.compiled_decode["buffer"] is buffer


def test_row_buckets_keep_three_leading_bits():
    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 10, 11, 13, 17, 100, 256, 257, 1000)] == \
        [1, 2, 3, 5, 8, 10, 10, 12, 14, 20, 112, 256, 320, 1024]
    assert all(n <= bucket(n) <= 1.25 * n for n in range(1, 5000))
    assert len({bucket(n) for n in range(129, 257)}) == 4  # four graphs per doubling of rows at most


def test_compiled_decoding_holds_one_zeroed_cache_for_the_run(tmp_path, monkeypatch):
    """decode.decoder with compile=True (torch.compile stood in for: this is about the cache): rows rounded up to
    a bucket; each call's cache is carved out of one buffer, the same while calls fit in it, zeroed for each; a
    longer call or another dtype (bf16 autocast) gets a new buffer, its length rounded up too."""
    monkeypatch.setattr(torch, "compile", lambda fn, **settings: fn)
    model = Transformer.from_pretrained(tiny_hf("qwen2", tmp_path)[0])
    rows, cache, step = decoder(model, 9, 20, compile=True)
    assert rows == 10 and cache.length == 20 and cache.k[1].shape == (10, 20, 2, 8) and step == model.decode
    buffer = cache.buffer
    assert buffer.numel() == 2 * 2 * 10 * 20 * 2 * 8 and cache.v[1].data_ptr() == buffer[-10 * 20 * 2 * 8:].data_ptr()
    buffer.fill_(1.0)
    rows, again, _ = decoder(model, 7, 13, compile=True)
    assert rows == 7 and again.buffer is buffer and again.k[0].shape == (7, 20, 2, 8)  # fits: the same buffer
    assert not any(x.any() for x in again.k + again.v)  # zeroed
    _, longer, _ = decoder(model, 7, 21, compile=True)
    assert longer.buffer is not buffer and longer.length == 24  # grown: 21 -> 24 columns, room for 10 rows kept
    assert longer.buffer.numel() == 2 * 2 * 10 * 24 * 2 * 8
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert decoder(model, 7, 13, compile=True)[1].k[0].dtype == torch.bfloat16
    rows, eager, step = decoder(model, 9, 20)
    assert rows == 9 and eager.k[0].shape == (9, 20, 2, 8) and step == model.decode  # eager: this call's own
