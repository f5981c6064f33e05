"""bench.py: the --memory estimate (FakeTensorMode: shapes only) equals a measurement on real tensors; the
GSM8K-like rows look like rollouts; the update's grouping by length changes nothing but the summation order; --gpu
without a GPU is one line (the checklist itself runs on the fake CUDA device: tests/robustness/test_gpu_path.py)."""
import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from bench_update import gsm8k_rows, ours_update
from bench_memory import scored_everywhere, step_peak, update_peak
from conftest import assert_close_sums
from machinery.distributed import micro_batches
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
            lp, _ = scored_everywhere(model, tokens)
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
    opt = torch.optim.AdamW(params, fused=True)
    opt.step()
    tracker = MemTracker()
    tracker.track_external(model, opt)
    with tracker:
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    n = sum(p.numel() for p in params)
    real = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"] - 16 * n
    assert step_peak(TINY) == real
    assert 0 < real < 16 * n  # clip_grad_norm_ and fused AdamW temporaries: not another copy of everything


def test_gsm8k_rows_are_shaped_like_rollouts():
    rows = gsm8k_rows(vocab=97, prompts=3, n=4)
    prompt_lens = (rows.valid & ~rows.mask).sum(1)
    response_lens = rows.mask.sum(1)
    P = int(prompt_lens.max())
    assert rows.tokens.size(1) == P + int(response_lens.max())  # trimmed to the longest response
    assert (prompt_lens.view(3, 4) == prompt_lens.view(3, 4)[:, :1]).all()  # n responses to one prompt
    assert ((60 <= prompt_lens) & (prompt_lens <= 200)).all() and ((20 <= response_lens) & (response_lens <= 200)).all()
    assert not rows.mask[:, :P].any() and (rows.mask <= rows.valid).all() and (rows.tokens[~rows.valid] == 0).all()
    for row in rows.valid:  # real tokens: one contiguous run per row, prompt then response
        cols = row.nonzero().flatten()
        assert cols[-1] - cols[0] + 1 == len(cols)


def test_micro_batches_take_rows_by_length_and_cover_their_tokens():
    rows = gsm8k_rows(vocab=97, prompts=3, n=4)
    groups = micro_batches(torch.arange(12), rows.valid, 5)
    assert sorted(torch.cat([ids for ids, _ in groups]).tolist()) == list(range(12))  # every row once
    assert [len(ids) for ids, _ in groups] == [5, 5, 2]
    lengths = [rows.valid[ids].sum(1) for ids, _ in groups]
    assert all(a.max() <= b.min() for a, b in zip(lengths, lengths[1:]))  # shortest rows first
    for ids, cols in groups:  # the span holds all the rows' real tokens and starts and ends on one
        assert rows.valid[ids][:, cols].sum() == rows.valid[ids].sum()
        assert rows.valid[ids][:, cols][:, [0, -1]].any(0).all()


def test_update_in_grouped_micro_batches_has_the_whole_batchs_gradient():
    torch.manual_seed(0)
    model = Transformer(TINY)
    rows = gsm8k_rows(vocab=97, prompts=2, n=3)
    grads = []
    for size in (6, 4):  # one micro-batch of all rows, or two grouped by length
        model.zero_grad()
        for step in ours_update(model, rows, size, torch.enable_grad):
            step()
        grads.append([p.grad.clone() for p in model.parameters()])
    # float summation order only (conftest.assert_close_sums): each gradient entry sums over the 719 response tokens,
    # each token's term over the 97 logits; a row left out of a micro-batch would move it by ~1/6
    assert int(rows.mask.sum()) == 719
    for a, b in zip(*grads):
        assert_close_sums(a, b, 719 * 97)


def test_gpu_smoke_without_cuda_is_one_error_line(monkeypatch, capsys):
    import bench
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("sys.argv", ["tools/bench.py", "--gpu"])
    with pytest.raises(SystemExit) as e:
        bench.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: --gpu needs a CUDA device") and err.count("\n") == 1


def test_the_kernel_floor_counts_matrix_products_and_attention_only():
    """bench's floor: a function that is one large matmul spends nearly all its time in it (the profiler's own
    overhead aside, far under half), one made of elementwise ops none; attention counts too."""
    from bench_update import kernel_share
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
    q = torch.randn(8, 4, 128, 64, generator=g)
    assert kernel_share(lambda: a @ b) > 0.5
    assert kernel_share(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)) > 0.5
    assert kernel_share(lambda: (a.exp() + b).sin()) == 0.0
