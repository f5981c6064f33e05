"""The training loop, run in-process on the tiny policy: log lines, checkpoints, design-choice pieces."""
import json
import math
import os

import pytest
import torch

import train
from configurator import configure

DEFAULTS = {k: getattr(train, k) for k in train.config_keys}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tmp_path, *argv):
    """train.py's main() with these config args, fast settings first; returns the JSONL log lines."""
    fast = [f"--out_dir={tmp_path}", f"--init_from={ROOT}/assets/tiny-arith", "--max_steps=2", "--eval_interval=2", "--eval_problems=16", "--batch_size=4"]
    train.__dict__.update(configure(DEFAULTS, fast + list(argv)))
    train.main()
    return [json.loads(line) for line in open(tmp_path / "log.jsonl")]


def test_two_steps_write_log_lines_and_an_hf_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM
    log = run(tmp_path)
    assert [line["step"] for line in log] == [0, 1, 2]
    for key in ("reward", "train_acc", "loss", "grad_norm", "entropy", "ratio", "clipfrac", "response_len",
                "tokens_per_s", "sample_s", "update_s", "coverage", "regret", "train_acc_paper"):
        assert key in log[1], key
    for key in ("zero_var_frac", "kl", "tokens"):  # a group of one has no variance to speak of; no KL was computed
        assert key not in log[1], key
    assert "test_pass@1" in log[0] and "test_greedy" in log[2]
    assert log[2]["responses"] == 8
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ckpt"))
    base = AutoModelForCausalLM.from_pretrained(os.path.join(ROOT, "assets", "tiny-arith"))
    moved = [not torch.equal(a, b) for a, b in zip(hf.parameters(), base.parameters())]
    assert any(moved)  # the update changed the weights that were saved


def test_same_seed_same_log(tmp_path):
    strip = lambda log: [{k: v for k, v in line.items() if not k.endswith("_s") and k not in ("time", "tokens_per_s")}
                         for line in log]
    a = strip(run(tmp_path / "a", "--rollouts=2", "--advantage=grpo"))
    b = strip(run(tmp_path / "b", "--rollouts=2", "--advantage=grpo"))
    assert a == b


@pytest.mark.parametrize("argv, msg", [
    (["--advantage=rloo"], "rloo needs rollouts >= 2"),
    (["--advantage=extra"], "extra_rollouts >= 1"),
    (["--ppo_epochs=0"], "ppo_epochs must be at least 1"),
    (["--loss_agg=mean"], "loss_agg='mean' is not one of"),
    (["--minibatches=3"], "must divide"),
])
def test_impossible_combinations_exit_2(tmp_path, argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, *argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err


def test_bf16_autocast_path_runs_on_cpu(tmp_path):
    from test_fake_cuda import logit_size
    from model import Transformer
    log = run(tmp_path, "--dtype=bfloat16", "--rollouts=2", "--advantage=grpo", "--batch_size=16")
    # bf16 sampler vs bf16 update: close, not equal. Each logit is a bf16 rounding (u = 2^-8) of the same dot
    # product, so the two sides round up to one bf16 ulp (2u |z|) apart, and a token's log-prob z_y - lse(z) up
    # to delta = 4u L apart, L the logits' size (test_fake_cuda's bound, ~0.2 here; measured: under 0.05). The
    # logged ratio is the mean of pi/mu over N sampled tokens, and E over mu's draw of pi/mu is sum(pi) = 1: a
    # martingale mean of terms within e^delta - 1 of 1, so |ratio - 1| <= (e^delta - 1) sqrt(2 ln(2/p) / N) but
    # with probability p = 1e-6 (Azuma-Hoeffding). ~0.1 at N ~ 150; a log-prob one column off moves it by ~0.6
    delta = 4 * 2.0 ** -8 * logit_size(Transformer.from_pretrained(os.path.join(ROOT, "assets", "tiny-arith")))
    n_tokens = log[-1]["trained"] * log[-1]["response_len"]  # every sampled response is trained (2 rollouts)
    bound = math.expm1(delta) * math.sqrt(2 * math.log(2 / 1e-6) / n_tokens)
    assert log[-1]["ratio"] == pytest.approx(1.0, abs=bound)
    assert math.isfinite(log[-1]["loss"])


def test_paper_config_on_an_offline_cpu_fails_with_one_clear_line(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def offline(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, os.path.join(ROOT, "config", "paper", "qwen2.5-0.5b_gsm8k.py"), "--max_steps=1")
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert "Qwen/Qwen2.5-0.5B-Instruct" in err[0] and "local directory" in err[0]


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "--device=cuda")
    assert e.value.code == 2 and "sees no GPU" in capsys.readouterr().err
