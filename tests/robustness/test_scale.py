"""torchrun/DDP equivalence, crash-safe checkpoints, non-finite guards (issue: scale out, never lose a run)."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import train
from conftest import assert_close_sums
from test_train import DEFAULTS, ROOT, run

# lr 1e-5: a small step keeps the second step's gradients, taken at weights that differ by rounding, close
LR = 1e-5
FLAGS = ["--max_steps=2", "--eval_interval=2", "--eval_problems=16", "--batch_size=8", "--rollouts=2",
         "--advantage=batch", "--minibatches=2", "--micro_batch_size=3", f"--learning_rate={LR}",
         f"--init_from={ROOT}/assets/tiny-arith", "--log_samples=6", "--log_rollouts=3"]


def train_cli(*args, env=None):
    return subprocess.run([*args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, **(env or {})))


def errors(text, each=4000):
    """A failed run's stderr for the assertion's message: all of it, or its first and last `each` characters
    when longer (the first error a rank printed, and the launcher's account of how each rank ended)."""
    if len(text) <= 2 * each:
        return text
    return f"{text[:each]}\n[... {len(text) - 2 * each} characters left out ...]\n{text[-each:]}"


# torchrun runs per variant, 4 in all: every one must exit 0 (a rank once died at exit in ~10-20% of runs;
# test_teardown_waits_for_every_rank pins that race itself)
@pytest.mark.slow
@pytest.mark.parametrize("extra, runs", [([], 1), (["--filter_zero_variance=True", "--resample_tries=2",
                                                    "--rollouts=3"], 2),
                                         (["--staleness=1", "--max_steps=3", "--eval_interval=3"], 1)],
                         ids=["plain", "dynamic_sampling", "staleness"])  # the filter: unequal rows per rank
def test_torchrun_two_ranks_equal_one_process(tmp_path, extra, runs):
    flags = FLAGS + extra
    one = train_cli(sys.executable, "train.py", *flags, f"--out_dir={tmp_path / 'one'}")
    assert one.returncode == 0, errors(one.stderr)
    a = load_file(tmp_path / "one" / "ckpt" / "model.safetensors")
    one_moments = torch.load(tmp_path / "one" / "ckpt" / "train_state.pt", weights_only=True)["optimizer"]["state"]
    base = load_file(os.path.join(ROOT, "assets", "tiny-arith", "model.safetensors"))
    assert any(not torch.equal(a[k], base[k]) for k in a)  # training moved the weights
    for i in range(runs):
        out = tmp_path / f"two{i}"
        two = train_cli(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train.py", *flags, f"--out_dir={out}", env={"OMP_NUM_THREADS": "1"})
        assert two.returncode == 0 and "terminate called" not in two.stderr, f"run {i}: {errors(two.stderr)}"
        b = load_file(out / "ckpt" / "model.safetensors")
        moments = torch.load(out / "ckpt" / "train_state.pt", weights_only=True)["optimizer"]["state"]
        for p, saved in one_moments.items():
            # AdamW's first moment is a fixed weighted sum of the steps' gradients, each a sum over a minibatch's
            # tokens that the ranks add in another order: at most 12 rows (8 x 3 / 2) of 64 positions (the
            # model's context), so 12 * 64 terms in conftest.assert_close_sums' bound (measured: under 100 U32)
            assert_close_sums(moments[p]["exp_avg"], saved["exp_avg"], n=12 * 64)
        # the weights: AdamW divides each entry's step by that entry's own gradient size, so an entry whose
        # gradient nearly cancels steps by up to lr on rounding alone, in either direction (measured: 0.2 lr on
        # a key bias); so every entry agrees only to 2 lr per optimizer step, and the moments above carry the test
        steps = int(one_moments[0]["step"])  # max_steps x minibatches
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=2 * LR * steps, rtol=0)
        # staleness: the sampler's snapshots are weights, of earlier steps: the same bound holds
        stale = [torch.load(d / "ckpt" / "train_state.pt", weights_only=True).get("stale", [])
                 for d in (tmp_path / "one", out)]
        assert len(stale[0]) == len(stale[1]) == (1 if "--staleness=1" in extra else 0)
        for x, y in zip(*stale):
            for k in x:
                torch.testing.assert_close(x[k], y[k], atol=2 * LR * steps, rtol=0)
    # samples.jsonl is written by rank 0 alone, with every rank's responses in the single process's order
    assert open(tmp_path / "one" / "samples.jsonl").read() == open(tmp_path / "two0" / "samples.jsonl").read()
    la, lb = ([json.loads(x) for x in open(tmp_path / d / "log.jsonl")] for d in ("one", "two0"))
    for x, y in zip(la, lb):  # same samples, rewards and evaluation: sampling is seeded per prompt
        for k in ("reward", "train_acc", "zero_var_frac", "response_len", "trained", "test_pass@1",
                  "train_greedy", "responses"):
            assert x.get(k) == y.get(k), k


TEARDOWN_PROBE = """
import time
from machinery import distributed as ddp
ddp.setup("cpu")
ddp.all_sum(1.0)  # a collective on a Python-made tensor, as train.py's last ones
if ddp.rank == 0:
    time.sleep(1.0)  # rank 0 writing the final checkpoint
t0 = time.monotonic()
ddp.teardown()
print(f"rank {ddp.rank} teardown {time.monotonic() - t0:.2f}s", flush=True)
"""


@pytest.mark.slow
def test_teardown_waits_for_every_rank(tmp_path):
    """A rank that starts interpreter shutdown right after its last collective could die with SIGABRT
    ("terminate called without an active exception"): gloo's worker thread still waits for the GIL to release
    that collective's tensor. teardown's barrier makes every rank wait, without the GIL, for the slowest."""
    script = tmp_path / "probe.py"
    script.write_text(TEARDOWN_PROBE)
    r = train_cli(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                  env={"OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT})
    assert r.returncode == 0, errors(r.stderr)
    waited = float(r.stdout.split("rank 1 teardown ")[1].split("s")[0])
    assert waited > 0.8, r.stdout  # rank 1 waited for rank 0


def test_world_size_must_divide_the_batch(capsys):
    with pytest.raises(SystemExit) as e:
        train.check_config(dict(DEFAULTS, batch_size=8), world=3)
    assert e.value.code == 2 and "multiple of the world size 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.check_config(dict(DEFAULTS, batch_size=2), world=3)  # smaller than the world


def test_grpo_with_one_rollout_warns(capsys):
    train.check_config(dict(DEFAULTS, advantage="grpo", rollouts=1), world=1)
    assert "same as 'none'" in capsys.readouterr().err


def test_nan_loss_is_skipped_then_stops(tmp_path, monkeypatch, capsys):
    real = train.policy_gradient
    calls = []

    def poisoned(*a, **k):  # step 1 is fine, every later step's loss is NaN
        loss, st = real(*a, **k)
        calls.append(1)
        return (loss * float("nan") if len(calls) > 1 else loss), st
    monkeypatch.setattr(train, "policy_gradient", poisoned)
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "--max_steps=10", "--eval_interval=1", "--max_bad_steps=3")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "3 steps in a row had a non-finite loss" in err
    assert err.count("non-finite loss, skipped") == 3  # the loss is NaN, the sampling log-probs are not
    log = [json.loads(x) for x in open(tmp_path / "log.jsonl")]
    assert [line["skipped"] for line in log[1:]] == [0, 1, 1]  # the 4th step stopped before its line
    # the weights never saw a NaN: the last checkpoint (step 3) holds finite weights
    w = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in w.values())


KILLER = """
import os, signal, sys
sys.path.insert(0, {root!r})
import train, model
from configurator import configure
real = model.Transformer.save_pretrained
def save_then_die(self, out):
    real(self, out)
    if {step!r} == train_state['step']:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-checkpoint: weights written, train_state.pt not yet
train_state = {{'step': 0}}
real_eval = train.run_eval
def counting_eval(policy, tok, splits, step):
    train_state['step'] = step
    return real_eval(policy, tok, splits, step)
train.run_eval = counting_eval
model.Transformer.save_pretrained = save_then_die
train.__dict__.update(configure({{k: getattr(train, k) for k in train.config_keys}}, sys.argv[1:]))
train.main()
"""


@pytest.mark.slow
def test_sigkill_during_checkpoint_still_resumes(tmp_path):
    flags = ["--max_steps=4", "--eval_interval=2", "--eval_problems=16", "--batch_size=4",
             f"--init_from={ROOT}/assets/tiny-arith", f"--out_dir={tmp_path}"]
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(root=ROOT, step=4))
    p = train_cli(sys.executable, str(script), *flags)
    assert p.returncode == -signal.SIGKILL
    assert os.path.exists(tmp_path / "ckpt.tmp")  # the half-written checkpoint
    state = torch.load(tmp_path / "ckpt" / "train_state.pt", weights_only=True)
    assert state["step"] == 2  # the last good one is intact
    p = train_cli(sys.executable, "train.py", *flags[:-2], f"--out_dir={tmp_path}", "--init_from=resume")
    assert p.returncode == 0, errors(p.stderr)
    log = [json.loads(x) for x in open(tmp_path / "log.jsonl")]
    assert [line["step"] for line in log] == [0, 1, 2, 3, 4]
    assert torch.load(tmp_path / "ckpt" / "train_state.pt", weights_only=True)["step"] == 4


KILL_AFTER_CHECKPOINT = """
import os, signal, sys
sys.path.insert(0, {root!r})
import train
from configurator import configure
real = train.checkpoint.save
def save_then_die(out_dir, policy, tok, opt, state):
    real(out_dir, policy, tok, opt, state)
    if state['step'] == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # killed just after a complete checkpoint
train.checkpoint.save = save_then_die
train.__dict__.update(configure({{k: getattr(train, k) for k in train.config_keys}}, sys.argv[1:]))
train.main()
"""


@pytest.mark.slow
def test_sigkill_right_after_a_checkpoint_keeps_its_step_in_the_log(tmp_path):
    flags = ["--max_steps=4", "--eval_interval=2", "--eval_problems=16", "--batch_size=4",
             f"--init_from={ROOT}/assets/tiny-arith", f"--out_dir={tmp_path}"]
    script = tmp_path / "killer.py"
    script.write_text(KILL_AFTER_CHECKPOINT.format(root=ROOT))
    assert train_cli(sys.executable, str(script), *flags).returncode == -signal.SIGKILL
    p = train_cli(sys.executable, "train.py", *flags[:-2], f"--out_dir={tmp_path}", "--init_from=resume")
    assert p.returncode == 0, errors(p.stderr)
    log = [json.loads(x) for x in open(tmp_path / "log.jsonl")]
    assert [line["step"] for line in log] == [0, 1, 2, 3, 4] and "test_pass@1" in log[2]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "--init_from=resume")
    assert e.value.code == 2 and "holds no checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_under_torchrun_shards_the_problems_and_writes_what_one_process_writes(tmp_path):
    """evaluate.py on 2 ranks: problem i on rank i % 2, each with its own seeded sampler, so eval.json and the
    samples file equal one process's byte for byte (9 problems: the shards are unequal), and only rank 0 writes."""
    flags = ["evaluate.py", f"--init_from={ROOT}/assets/tiny-arith", "--eval_problems=9", "--n_samples=2",
             "--log_samples=5"]
    one = train_cli(sys.executable, *flags, f"--out={tmp_path / 'one.json'}")
    assert one.returncode == 0, errors(one.stderr)
    two = train_cli(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *flags,
                    f"--out={tmp_path / 'two.json'}", env=dict(OMP_NUM_THREADS="1"))
    assert two.returncode == 0, errors(two.stderr)
    assert (tmp_path / "one.json").read_text() == (tmp_path / "two.json").read_text()
    assert (tmp_path / "one_samples.jsonl").read_text() == (tmp_path / "two_samples.jsonl").read_text()
    assert two.stdout.count("wrote ") == 1 and len(open(tmp_path / "two_samples.jsonl").readlines()) == 2 * 2 * 5
