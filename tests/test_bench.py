"""bench.py --memory's estimate (FakeTensorMode: shapes only) equals a measurement on real tensors."""
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from bench import step_peak, update_peak
from model import Transformer

TINY = dict(model_type="qwen2", vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e4, tie_word_embeddings=True)


def real_peak(micro_batch, seq_len, grad_checkpointing):
    model = Transformer(TINY).train()
    model.grad_checkpointing = grad_checkpointing
    tokens = torch.randint(0, 97, (micro_batch, seq_len))
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lp, _ = model(tokens, targets=tokens)
        lp.sum().backward()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    return sum(v for k, v in peak.items() if k != "Total" and k.value in ("Activation", "Temp", "Other"))


def test_fake_tensor_estimate_equals_real_measurement():
    for ckpt in (False, True):  # within 1%: fake mode may skip a small int64 temporary
        assert abs(update_peak(TINY, 3, 40, ckpt) - real_peak(3, 40, ckpt)) < 0.01 * real_peak(3, 40, ckpt)


def test_estimate_grows_with_tokens_and_checkpointing_saves_memory():
    plain, ckpt = update_peak(TINY, 4, 64, False), update_peak(TINY, 4, 64, True)
    assert ckpt < plain
    # activations of a (4, 64) micro-batch: at least the bf16 inputs of the 2 layers' 7 projections
    assert plain > 2 * 7 * 4 * 64 * 64 * 2
    assert update_peak(TINY, 8, 64, False) > 1.8 * plain - 2 * 64 * 97 * 4  # ~linear in tokens


def test_optimizer_step_estimate_equals_real_measurement():
    model = Transformer(TINY)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, foreach=True)
    opt.step()
    tracker = MemTracker()
    tracker.track_external(model, opt)
    with tracker:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    n = sum(p.numel() for p in params)
    real = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"] - 16 * n
    assert step_peak(TINY) == real
    assert 0 < real < 16 * n  # foreach temporaries: a few bytes per parameter, not another copy of everything
