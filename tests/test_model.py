"""The hand-written transformer equals transformers' implementation, logits and cache included."""
import pytest
import torch

from conftest import tiny_hf
from model import Transformer, padded_causal_mask, positions, token_logprobs

FAMILIES = ["qwen2", "llama", "olmo2"]


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers(family, tmp_path):
    path, hf = tiny_hf(family, tmp_path)
    ours = Transformer.from_pretrained(path)
    idx = torch.randint(0, 61, (3, 40))  # longer than llama3's original context 16, so the scaling matters
    with torch.no_grad():
        want = hf(idx).logits
        got = ours(idx)
    assert got.shape == (3, 40, 61)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_decoding_matches_full_forward(family, tmp_path):
    path, _ = tiny_hf(family, tmp_path)
    model = Transformer.from_pretrained(path)
    idx = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        full = model(idx)
        cache = model.new_cache(2, 12)
        steps = [model(idx[:, :5], cache=cache)]
        for t in range(5, 12):
            steps.append(model(idx[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_logits(tmp_path):
    path, _ = tiny_hf("qwen2", tmp_path)
    model = Transformer.from_pretrained(path)
    a = torch.randint(1, 61, (1, 9))
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.long), a], 1)
    valid = torch.cat([torch.zeros(1, 4, dtype=torch.bool), torch.ones(1, 9, dtype=torch.bool)], 1)
    with torch.no_grad():
        want = model(a)
        got = model(padded, positions(valid), padded_causal_mask(valid))[:, 4:]
    assert torch.isfinite(model(padded, positions(valid), padded_causal_mask(valid))).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


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
        torch.testing.assert_close(hf(idx).logits, ours(idx), atol=1e-5, rtol=1e-5)


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


def test_token_logprobs_match_log_softmax(tmp_path):
    path, hf = tiny_hf("llama", tmp_path)
    model = Transformer.from_pretrained(path)
    idx = torch.randint(0, 61, (2, 7))
    valid = torch.ones_like(idx, dtype=torch.bool)
    with torch.no_grad():
        lp, ent = token_logprobs(model, idx, valid, temperature=0.7)
        logp = torch.log_softmax(hf(idx).logits / 0.7, -1)
    want = logp[:, :-1].gather(-1, idx[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(lp[:, 1:], want, atol=1e-5, rtol=1e-5)
    assert (lp[:, 0] == 0).all()
    torch.testing.assert_close(ent[:, 1:], -(logp.exp() * logp).sum(-1)[:, :-1], atol=1e-5, rtol=1e-5)


def test_bad_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        Transformer.from_pretrained(str(tmp_path / "nope"))
    assert e.value.code == 2


def padded_batch():
    """Left-padded prompts and right-padded responses, as the sampler returns them."""
    tokens = torch.randint(1, 61, (3, 10))
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[0, :3] = False  # left padding
    valid[1, 8:] = False  # right padding after a stop token
    valid[2, :1] = False
    valid[2, 7:] = False
    return tokens.masked_fill(~valid, 0), valid


def test_chunked_logprobs_and_checkpointing_match_the_plain_path(tmp_path, monkeypatch):
    import model as model_lib
    path, _ = tiny_hf("olmo2", tmp_path)
    tokens, valid = padded_batch()

    def run(chunk, ckpt):
        m = Transformer.from_pretrained(path).train()
        m.grad_checkpointing = ckpt
        monkeypatch.setattr(model_lib, "LOGIT_CHUNK", chunk)
        lp, ent = token_logprobs(m, tokens, valid, entropy_grad=True)
        (lp.sum() + ent.sum()).backward()
        return lp, ent, [p.grad for p in m.parameters()]
    want = run(2 ** 27, False)
    for chunk, ckpt in ((61 * 4, False), (2 ** 27, True), (61 * 7, True)):  # 4 and 7 tokens per chunk
        got = run(chunk, ckpt)
        torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=1e-5)
        for g, w in zip(got[2], want[2]):
            torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)
    lp = want[0]
    assert (lp[~valid] == 0).all() and (lp[:, 0] == 0).all() and lp[0, 3] == 0 and lp[2, 1] == 0
