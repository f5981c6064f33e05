"""The hand-written transformer equals transformers' implementation, logits and cache included; a model
directory that does not load ends in one line. The log-prob head's fast paths: test_model_logprobs.py."""
import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, tiny_hf
from model import Transformer, apply_rope, kv_cache_bytes, load_tokenizer, positions

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
