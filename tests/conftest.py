import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
U32 = 2.0 ** -24  # float32's unit roundoff


def pytest_addoption(parser):
    # float sums split across threads add in another order: CI runs the numerics tests at 1 and at 2 threads
    parser.addoption("--torch-threads", type=int, default=1, help="torch.set_num_threads for the tests (default 1)")


def pytest_configure(config):
    torch.set_num_threads(config.getoption("torch_threads"))


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same global random state, whatever ran before it (a test that draws with
    torch.randint(...) sees the same numbers alone, in any order, in a student's copy)."""
    torch.manual_seed(0)


def assert_close_sums(got, want, n):
    """got and want: the same float32 tensor computed with its sums in another order (chunks, threads,
    recomputation). Reordering a float32 sum of n terms moves it by at most n * U32 * sum|terms| (Higham,
    Accuracy and Stability of Numerical Algorithms, 2002, section 4.2); the tensor's largest entry stands for the
    size of its terms. So the tolerance is n * U32 * max|want|, n the number of terms behind an entry; a bug (a
    token missed or counted twice at a chunk boundary) moves an entry by that token's share, far above it."""
    torch.testing.assert_close(got, want, atol=n * U32 * want.abs().max().item(), rtol=0)


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
