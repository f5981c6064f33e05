import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
torch.set_num_threads(1)


def tiny_hf(family, tmp_path, **kw):
    """A random tiny transformers model of a family, saved to tmp_path; returns (path, hf_model)."""
    import transformers as tf
    common = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)
    common.update(kw)
    if family == "qwen2":
        cfg = tf.Qwen2Config(tie_word_embeddings=True, **common)
        cls = tf.Qwen2ForCausalLM
    elif family == "llama":
        cfg = tf.LlamaConfig(tie_word_embeddings=True, rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=16), rope_theta=500000.0, **common)
        cls = tf.LlamaForCausalLM
    else:
        cfg = tf.Olmo2Config(tie_word_embeddings=False, **common)
        cls = tf.Olmo2ForCausalLM
    torch.manual_seed(0)
    m = cls(cfg).eval()
    with torch.no_grad():  # HF zero-inits some biases; make every parameter matter
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = str(tmp_path / family)
    m.save_pretrained(path)
    return path, m


@pytest.fixture
def arith():
    """The committed tiny arithmetic policy and its tokenizer."""
    from transformers import AutoTokenizer
    from model import Transformer
    path = os.path.join(ROOT, "assets", "tiny-arith")
    return Transformer.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture
def fake_cuda():
    """The fake CUDA device of tests/fake_cuda.py for one test: device="cuda" runs on the CPU under a GPU's
    device rules; yields the module (its syncs and cuda_loads counters start at zero)."""
    import fake_cuda as module
    with module.fake_cuda():
        yield module
