"""The GPU path, run on the fake CUDA device (tests/fake_cuda.py) in CPU CI: train.py on device=cuda with every
shipped config (tiny stand-ins of all three model families, tiny local data) and every knob that moves tensors,
evaluate.py, bench.py and resume on cuda, a checkpoint written on "cuda:0" evaluated on a CPU machine, and two
steps on cuda equal to the CPU's. What this cannot see: real CUDA kernels, flash-attn, memory."""
import glob
import json
import math
import os
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

import train
from configurator import configure
from test_data import GSM8K, LIGHTEVAL, QWEN_TEMPLATE, char_tokenizer, quiet_private_cache, write  # noqa: F401
from test_train import DEFAULTS, ROOT, run

MODEL_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "config", "paper", "*-*b_*.py")))
FAMILY = {"qwen2.5-0.5b": "qwen2", "llama3.2-1b": "llama", "olmo2-1b": "olmo2"}
# every design-choice config (the paper's grids and nanoRFT's extensions); sweep_cpu is the arith task's base
DESIGNS = sorted(os.path.relpath(f, os.path.join(ROOT, "config"))[:-3]
                 for f in glob.glob(os.path.join(ROOT, "config", "**", "*.py"), recursive=True)
                 if f not in MODEL_CONFIGS and os.path.basename(f) not in ("paper.py", "sweep_cpu.py"))
UNTIMED = ("time", "sample_s", "update_s", "tokens_per_s")


def untimed(log):
    return [{k: v for k, v in line.items() if k not in UNTIMED} for line in log]


@pytest.fixture(scope="module")
def local_models(tmp_path_factory):
    """A random tiny model of each family with a chat-template tokenizer, and GSM8K/MATH-shaped local data."""
    from conftest import tiny_hf
    root = tmp_path_factory.mktemp("models")
    tok = char_tokenizer(QWEN_TEMPLATE)
    paths = {}
    for family in ("qwen2", "llama", "olmo2"):
        paths[family], _ = tiny_hf(family, root, vocab_size=len(tok))
        tok.save_pretrained(paths[family])
    for task, rows in (("gsm8k", GSM8K), ("math", LIGHTEVAL * 2)):  # math_full tests on MATH-lighteval's schema
        write(rows, str(root / task / "train.parquet"))
        write(rows, str(root / task / "test.jsonl"))
    return root, paths


def shrunk(design):
    """A design config's settings with the sizes a CPU test can afford: batch <= 2, rollouts <= 4."""
    c = configure(DEFAULTS, [os.path.join(ROOT, "config", f"{design}.py")])
    return json.dumps(dict(c, batch_size=min(c["batch_size"], 2), rollouts=min(c["rollouts"], 4)), sort_keys=True)


def distinct(designs):
    """{the first config of each distinct shrunk setting: every config it stands for}"""
    out = {}
    for design in designs:
        out.setdefault(next((d for d in out if shrunk(d) == shrunk(design)), design), []).append(design)
    return out


DISTINCT = distinct(DESIGNS)


@pytest.mark.slow
@pytest.mark.parametrize("design", DISTINCT)
def test_every_config_trains_on_cuda(design, local_models, tmp_path, fake_cuda):
    """A model config (the six in turn, so all three families and both tasks) + a design-choice config, as the
    README composes them, on cuda. Only sizes are shrunk (batch <= 2, rollouts <= 4, 12 tokens, 1 step, 1 problem
    per split), so configs that differ only in size (the grids' points) run once, under their first name."""
    root, paths = local_models
    model_config = MODEL_CONFIGS[list(DISTINCT).index(design) % len(MODEL_CONFIGS)]
    configs = [model_config, os.path.join(ROOT, "config", f"{design}.py")]
    c = configure(DEFAULTS, configs)
    name = os.path.basename(model_config)[:-3]
    args = configs + [f"--init_from={paths[FAMILY[name.split('_')[0]]]}", f"--data_path={root / name.split('_')[1]}",
                      f"--out_dir={tmp_path}", "--device=cuda", f"--batch_size={min(c['batch_size'], 2)}",
                      f"--rollouts={min(c['rollouts'], 4)}", "--max_steps=1", "--eval_problems=1",
                      "--max_new_tokens=12", "--eval_batch_size=2"]
    train.__dict__.update(configure(DEFAULTS, args))
    train.main()
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [line["step"] for line in log] == [0, 1] and "test_pass@1" in log[-1]
    assert log[1]["trained"] == 0 or math.isfinite(log[1]["loss"])  # DAPO's filter may leave nothing to train
    assert "peak_mem_gib" in log[1] and not fake_cuda.cuda_loads


def test_the_config_runs_cover_every_config_and_all_six_model_configs():
    assert sorted(d for ds in DISTINCT.values() for d in ds) == DESIGNS
    assert len(DISTINCT) >= len(MODEL_CONFIGS)


KNOBS = {  # the settings that move tensors between devices or run another code path, on the tiny policy
    "kl_in_reward_nucleus": ["--rollouts=2", "--advantage=grpo", "--kl_coef=0.1", "--kl_in_reward=True",
                             "--top_p=0.9", "--truncated_logprobs=True"],
    "kl_loss_k2_clamped": ["--rollouts=2", "--advantage=rloo", "--kl_coef=0.1", "--kl_estimator=k2",
                           "--kl_clamp=1.0"],
    "ppo_epochs_minibatches_dual_clip": ["--rollouts=2", "--advantage=grpo", "--ppo_epochs=2", "--minibatches=2",
                                         "--dual_clip=3.0"],
    "gspo": ["--rollouts=2", "--advantage=grpo", "--ratio_level=sequence", "--minibatches=2",
             "--loss_agg=seq_mean_token_mean"],
    "cispo": ["--rollouts=2", "--advantage=grpo", "--policy_loss=cispo", "--minibatches=2", "--clip_low=1.0"],
    "extra": ["--extra_rollouts=3", "--advantage=extra"],
    "replay": ["--rollouts=2", "--advantage=replay", "--replay_window=3"],
    "dapo_filter_resample": ["--rollouts=3", "--advantage=grpo", "--filter_zero_variance=True",
                             "--resample_tries=2"],
    "micro_and_sample_batches": ["--rollouts=2", "--advantage=batch", "--micro_batch_size=3",
                                 "--sample_batch_size=2"],
    "entropy_bonus_mask_truncated_nucleus": ["--entropy_coef=0.01", "--mask_truncated=True",
                                             "--loss_agg=seq_sum_norm", "--max_new_tokens=3", "--top_k=20",
                                             "--top_p=0.8", "--truncated_logprobs=True"],
    "float16_loss_scaler": ["--dtype=float16", "--sampler_dtype=bfloat16", "--rollouts=2", "--advantage=grpo",
                            "--is_correction=tis"],
    "bfloat16_checkpointing": ["--dtype=bfloat16", "--grad_checkpointing=True", "--rollouts=2",
                               "--advantage=dr_grpo", "--kl_coef=0.01", "--micro_batch_size=4"],
    "staleness_m2po": ["--staleness=1", "--rollouts=2", "--advantage=grpo", "--is_correction=m2po"],
    "compile_bfloat16_reference": ["--compile=True", "--dtype=bfloat16", "--rollouts=2", "--advantage=grpo",
                                   "--kl_coef=0.01", "--sample_batch_size=3"],
    "cosine_trained_subset_pass_at_k": ["--lr_schedule=cosine", "--warmup_steps=1", "--train_problems=4",
                                        "--eval_samples=2", "--log_rollouts=2"],
}


@pytest.mark.parametrize("knob", KNOBS)
def test_every_knob_trains_on_cuda(knob, tmp_path, fake_cuda):
    log = run(tmp_path, "--device=cuda", "--eval_problems=4", *KNOBS[knob])
    assert [line["step"] for line in log] == [0, 1, 2]
    assert all(math.isfinite(line["loss"]) and line["peak_mem_gib"] == 0.0 for line in log[1:])


def test_two_steps_on_cuda_equal_the_cpu_run(tmp_path, fake_cuda, monkeypatch):
    """The same CPU kernels run in the same order on both devices, so logs and weights are equal exactly: a
    tensor left on the wrong device, or a device-dependent branch that changed the math, would show here. The one
    such branch on purpose: AdamW is fused on CUDA (train.py), so here the CPU run's is fused too."""
    flags = ["--rollouts=2", "--advantage=grpo", "--minibatches=2", "--micro_batch_size=3", "--sample_batch_size=2",
             "--kl_coef=0.05", "--entropy_coef=0.01", "--log_rollouts=2", "--eval_problems=8"]
    adamw, fused = torch.optim.AdamW, []
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, **kw: fused.append(kw["fused"]) or adamw(
        params, **dict(kw, fused=True)))
    logs = {d: untimed(run(tmp_path / d, f"--device={d}", *flags)) for d in ("cpu", "cuda")}
    assert fused == [False, True]  # as train.py asks for them
    assert [{k: v for k, v in line.items() if k != "peak_mem_gib"} for line in logs["cuda"]] == logs["cpu"]
    weights = [load_file(tmp_path / d / "ckpt" / "model.safetensors") for d in ("cpu", "cuda")]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert open(tmp_path / "cpu" / "samples.jsonl").read() == open(tmp_path / "cuda" / "samples.jsonl").read()


def test_resume_on_cuda_continues_the_run_and_puts_no_checkpoint_on_the_gpu(tmp_path, fake_cuda):
    """Every save checks the last checkpoint and a resume reads it: both to the CPU (nothing torch.load puts on
    cuda:0), and AdamW moves its state to the parameters itself, so a resumed run equals one that never stopped."""
    flags = ["--device=cuda", "--eval_interval=1", "--eval_problems=4", "--rollouts=2", "--advantage=grpo"]
    straight = untimed(run(tmp_path / "straight", *flags, "--max_steps=3"))
    run(tmp_path / "resumed", *flags, "--max_steps=2")
    resumed = untimed(run(tmp_path / "resumed", *flags, "--max_steps=3", "--init_from=resume"))
    assert resumed == straight
    a, b = (load_file(tmp_path / d / "ckpt" / "model.safetensors") for d in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not fake_cuda.cuda_loads


def evaluate_cli(monkeypatch, *argv):
    import evaluate
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *argv])
    evaluate.main()


def test_a_checkpoint_written_on_a_gpu_evaluates_on_a_cpu_machine(tmp_path, monkeypatch):
    """train_state.pt of a cuda run says cuda:0 (as a real GPU's does); evaluate.py --device=cpu reads it on a
    machine without a GPU (it said the run 'holds no whole checkpoint' before map_location='cpu'), and the run
    resumes there."""
    import fake_cuda
    with fake_cuda.fake_cuda():
        run(tmp_path / "run", "--device=cuda", "--max_steps=1")
    if not torch.cuda.is_available():  # the file really is cuda-tagged: a plain load refuses it on a CPU machine
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "run" / "ckpt" / "train_state.pt", weights_only=True)
    evaluate_cli(monkeypatch, f"--init_from={tmp_path / 'run'}", "--device=cpu", "--eval_problems=4", "--n_samples=2",
                 f"--out={tmp_path / 'eval.json'}")
    results = json.load(open(tmp_path / "eval.json"))
    assert 0 <= results["test"]["pass@1"] <= 1
    log = run(tmp_path / "run", "--device=cpu", "--max_steps=2", "--init_from=resume")  # and trains on there
    assert [line["step"] for line in log] == [0, 1, 2] and math.isfinite(log[-1]["loss"])


@pytest.mark.parametrize("dtype, compile", [("float32", False), ("bfloat16", False), ("float32", True)])
def test_evaluate_runs_on_cuda_with_the_cpu_results(dtype, compile, tmp_path, monkeypatch, fake_cuda):
    """compile on cuda (the fake device runs the compiled step's function as it is) against the CPU's eager run."""
    argv = [f"--dtype={dtype}", "--eval_problems=6", "--n_samples=2", "--eval_batch_size=4"]
    for device in ("cpu", "cuda"):
        evaluate_cli(monkeypatch, *argv, f"--device={device}", f"--out={tmp_path / device}.json",
                     f"--compile={compile and device == 'cuda'}")
    assert json.load(open(tmp_path / "cpu.json")) == json.load(open(tmp_path / "cuda.json"))
    assert len(fake_cuda.compiles) == compile  # once per model


def test_bench_runs_on_cuda(fake_cuda, capsys):
    """bench.py's sampler (eager and compiled) and update comparison on cuda (transformers' model on the fake device
    too), tiny shapes."""
    import bench
    args = SimpleNamespace(device="cuda", dtype="bfloat16", repeat=1, compile=True)
    bench.bench_shape("tiny-arith policy", os.path.join(ROOT, "assets", "tiny-arith"), 2, 2, 4, 4, args)
    out = capsys.readouterr().out
    assert "sampler  nanoRFT" in out and "nanoRFT compiled" in out and "update   nanoRFT" in out
    assert "peak memory" in out and not fake_cuda.sdpa_calls["math"]


def gpu_checklist(tmp_path):
    """bench.py --gpu's checklist on a tiny Qwen2 (grouped-query heads) on cuda: (exit code, printed lines)."""
    import bench
    import bench_gpu
    from conftest import tiny_hf
    from model import Transformer
    path, _ = tiny_hf("qwen2", tmp_path, num_key_value_heads=2)
    model = Transformer.from_pretrained(path, device="cuda")
    rows = bench.Rollout(*(x.to("cuda") for x in bench.gsm8k_rows(61, prompts=2, n=2)))
    prompts = [row[valid].tolist() for row, valid in zip(rows.tokens[::2], rows.valid[::2])]
    return bench_gpu.checklist(model, "random", rows, prompts, n=2, new_tokens=6, repeat=1)


def test_the_first_gpu_checklist_passes_on_the_fake_device(tmp_path, fake_cuda, capsys):
    """The host side of bench.py --gpu: every attention call fused (and the run without the math kernel), eager and
    compiled decoding, the sampler/trainer gap below an inference engine's, peak memory (0 here) under the estimate."""
    assert gpu_checklist(tmp_path) == 0
    out = capsys.readouterr().out
    # 2 layers x (the prefill and 7 decode steps of 8 tokens, the update's prompts' and responses' passes)
    assert f"1. attention kernels of a sampler call and an update: efficient_attention {2 * (8 + 2)};" in out
    assert "without the math kernel: ok" in out and "all checks passed" in out
    assert "2. sampler, 2 prompts x 2, 6 new tokens: eager" in out and "compiled" in out
    assert fake_cuda.compiles[0]["mode"] == "reduce-overhead"


def test_the_checklist_fails_on_attention_that_ignores_the_mask(tmp_path, fake_cuda, capsys, monkeypatch):
    """A trainer kernel that reads the wrong keys (the padding and prompt mask dropped in the update's forward) shows
    as a sampler/trainer gap far above an inference engine's: exit code 1, named."""
    from machinery import flash
    real = flash.attention
    monkeypatch.setattr(flash, "attention", lambda q, k, v, ctx, layer: real(
        q, k, v, ctx._replace(mask=None) if ctx.col is None and ctx.cache is None else ctx, layer))
    assert gpu_checklist(tmp_path) == 1
    assert "FAILED: mismatch_kl" in capsys.readouterr().out
