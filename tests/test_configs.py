"""The paper configs are the paper's scripts: every config/ file standing for a script of docs/PAPER.md,
composed with each model config through train.py's configurator, resolves to the settings in the tables
below. The tables are written from docs/PAPER.md, not from the configs, so a drift in either fails here."""
import glob
import math
import os

import pytest
import torch

import advantage as adv_lib
import data
import train
from machinery.checks import check_config
from configurator import configure
from test_data import GSM8K, LIGHTEVAL, QWEN_TEMPLATE, char_tokenizer, quiet_private_cache, write  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = {k: getattr(train, k) for k in train.config_keys}
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "config", "paper", "*-*b_*.py")))
# every config file, named by its path in config/ without ".py" ("minimal", "paper/rollouts_16")
NAMES = sorted(os.path.relpath(f, os.path.join(ROOT, "config"))[:-3]
               for f in glob.glob(os.path.join(ROOT, "config", "**", "*.py"), recursive=True))

# docs/PAPER.md "Every run": what every paper script sets (verl's defaults where a script is silent)
EVERY_RUN = dict(
    ppo_epochs=1, minibatches=1, clip_low=0.2, clip_high=0.2, ratio_level="token", policy_loss="ppo",  # 1 update
    loss_agg="token_mean", entropy_coef=0.0,
    kl_coef=0.001, kl_estimator="k3", kl_clamp=10.0, kl_in_reward=False,  # low_var_kl in the loss, clamped
    learning_rate=1e-6, lr_schedule="constant", weight_decay=0.01, grad_clip=1.0,  # AdamW
    adv_eps=1e-6, max_prompt_tokens=512, max_new_tokens=1024, temperature=1.0, top_k=0, top_p=1.0,
    grader="paper", eval_interval=100, eval_problems=0, train_problems=0, dtype="bfloat16",
)
# knobs that change memory, speed or bookkeeping, not what a run computes: each config may choose them
FREE = {"out_dir", "device", "num_threads", "eval_batch_size", "micro_batch_size", "grad_checkpointing",
        "sample_batch_size", "max_steps", "data_path", "overwrite", "max_bad_steps", "seed"}
# docs/PAPER.md "Models and data"
MODELS = {"qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "llama3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
          "olmo2-1b": "allenai/OLMo-2-0425-1B-Instruct"}
TASKS = {"gsm8k": "gsm8k", "math": "math_full"}  # MATH's test split: MATH-lighteval's 5000 problems


def grpo(b, n):
    """A GRPO grid point; at n = 1 verl's GRPO is the raw reward (test below), which nanoRFT calls "none"."""
    return dict(batch_size=b, rollouts=n, advantage="grpo" if n > 1 else "none")


# docs/PAPER.md "The grids": config -> (the paper script it reproduces, its settings beyond EVERY_RUN). A script
# shared by several grids has one config: 32 x 1 is minimal.py (rollouts grid), 32 x 8 is grpo_8rollouts.py
# (rollouts, budget and batch grids); the other grid points are in config/paper/.
GRID = {"minimal": ("run_grpo_0032_1_qwen0.5b_gsm.sh", grpo(32, 1)),
        "grpo_8rollouts": ("run_grpo_0032_8_qwen0.5b_gsm.sh", grpo(32, 8)),
        **{f"paper/rollouts_{n}": (f"run_grpo_0032_{n}_qwen0.5b_gsm.sh", grpo(32, n)) for n in (16, 32, 64)},
        **{f"paper/budget256_{b}x{n}": (f"run_grpo_{b:04d}_{n}_qwen0.5b_{'math' if b in (64, 128) else 'gsm'}.sh",
                                        grpo(b, n))
           for b, n in ((1, 256), (2, 128), (4, 64), (8, 32), (16, 16), (64, 4), (128, 2), (256, 1))},
        **{f"paper/batch_{b}x8": (f"run_grpo_{b:04d}_8_qwen0.5b_gsm.sh", grpo(b, 8)) for b in (64, 128)},
        "extra_sampling": ("run_onerpo_0032_1_7_qwen0.5b_gsm.sh",
                           dict(batch_size=32, rollouts=1, extra_rollouts=7, advantage="extra")),
        **{f"paper/replay_{b}x{n}": (f"run_asyttgrpo_{b:04d}_{n}_8_qwen0.5b_gsm.sh",
                                     dict(batch_size=b, rollouts=n, advantage="replay", replay_window=8))
           for b, n in ((64, 4), (128, 2), (256, 1), (512, 1), (1024, 1), (2048, 1))}}
# nanoRFT's configs beyond the paper's scripts: what each changes from EVERY_RUN (and nothing else)
EXTENSIONS = {
    "raw_rollouts_8": dict(batch_size=32, rollouts=8, advantage="none"),
    "one_problem": dict(train_problems=1, batch_size=1, rollouts=1, advantage="none"),
    "gspo": dict(grpo(32, 8), ratio_level="sequence", clip_low=3e-4, clip_high=4e-4, minibatches=4,
                 loss_agg="seq_mean_token_mean"),
    "cispo": dict(grpo(32, 8), policy_loss="cispo", clip_low=1.0, clip_high=0.28, minibatches=4),
}


def cfg(name):
    return os.path.join(ROOT, "config", f"{name}.py")


def differences(c, expected):
    """{key: (resolved, expected)} over every knob but FREE ones; expected falls back to train.py's default."""
    return {k: (c[k], expected.get(k, DEFAULTS[k])) for k in DEFAULTS
            if k not in FREE and c[k] != expected.get(k, DEFAULTS[k])}


def test_there_are_six_model_configs():
    names = sorted(os.path.basename(c) for c in CONFIGS)
    assert names == [f"{m}_{t}.py" for m in ("llama3.2-1b", "olmo2-1b", "qwen2.5-0.5b") for t in ("gsm8k", "math")]


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.parametrize("point", ["", *GRID], ids=lambda p: p or "alone")
def test_model_config_with_a_grid_point_is_the_papers_run(path, point):
    """Every (model config, grid config) pair resolves to docs/PAPER.md's every-run settings plus the grid point's,
    every other knob at train.py's default; alone, a model config is the minimalist baseline (32 x 1)."""
    model, task = os.path.basename(path)[:-3].split("_")
    c = configure(DEFAULTS, [path] + ([cfg(point)] if point else []))
    expected = dict(EVERY_RUN, init_from=MODELS[model], task=TASKS[task], **(GRID[point][1] if point else grpo(32, 1)))
    assert differences(c, expected) == {}
    assert c["out_dir"] == DEFAULTS["out_dir"]  # train.py derives a run's out_dir from the configs given
    check_config(c, world=1)


@pytest.mark.parametrize("name", GRID)
def test_each_grid_config_names_the_paper_script_it_reproduces(name):
    assert GRID[name][0] in open(cfg(name)).read()


@pytest.mark.parametrize("name", EXTENSIONS)
def test_extension_configs_change_only_what_they_say(name):
    c = configure(DEFAULTS, [CONFIGS[0], cfg(name)])
    expected = dict(EVERY_RUN, init_from=MODELS["llama3.2-1b"], task="gsm8k", **EXTENSIONS[name])
    assert differences(c, expected) == {}
    check_config(c, world=1)


def test_every_config_is_in_a_table_here():
    """A new paper or extension config must join GRID or EXTENSIONS (or the older configs' list) to be checked."""
    older = {"paper/paper", "sweep_cpu", "dapo", "dr_grpo", "kl_k3", "ppo_clip", "reinforce_pp", "rloo"}
    models = {"paper/" + os.path.basename(c)[:-3] for c in CONFIGS}
    assert set(NAMES) - models - older == set(GRID) | set(EXTENSIONS)


@pytest.mark.parametrize("base", ["", "sweep_cpu", "paper/qwen2.5-0.5b_gsm8k"], ids=lambda b: b or "alone")
def test_no_two_config_files_are_the_same_run(base):
    """A setting has one file, so a user, the sweeps and the docs never meet two names for one run (32 x 8 is a
    point of three grids, and one file). Alone, every file resolves to its own settings; after a base (the CPU
    one, a model config), every design-choice config does (the bases are what the others compose after)."""
    bases = {"sweep_cpu", "paper/paper", *("paper/" + os.path.basename(c)[:-3] for c in CONFIGS)}
    seen = {}
    for name in NAMES if not base else sorted(set(NAMES) - bases):
        c = configure(DEFAULTS, ([cfg(base)] if base else []) + [cfg(name)])
        seen.setdefault(tuple(sorted(c.items())), []).append(name)
    assert [names for names in seen.values() if len(names) > 1] == []


def test_at_one_rollout_grpo_is_the_raw_reward():
    """docs/PAPER.md: verl's GRPO gives a group of one mean 0 and std 1, so the n = 1 grid points train on the raw
    reward; nanoRFT runs them as advantage="none", which must be the same numbers."""
    rewards = torch.tensor([[1.0], [0.0], [1.0]])  # (B, 1)
    grpo_adv = adv_lib.compute_advantages(rewards, "grpo", eps=1e-6)
    assert torch.equal(grpo_adv, rewards / (1 + 1e-6)) and torch.allclose(grpo_adv, rewards)
    assert torch.equal(adv_lib.compute_advantages(rewards, "none"), rewards)


def test_the_cpu_base_keeps_the_papers_update_and_says_what_it_changes():
    c = configure(DEFAULTS, [cfg("sweep_cpu")])
    changed = {k for k in differences(c, dict(EVERY_RUN, init_from=DEFAULTS["init_from"], task="arith"))}
    # the changes its header gives reasons for; grader and dtype: arith has one grader, CPUs compute in float32
    assert changed == {"learning_rate", "max_new_tokens", "eval_interval", "eval_problems", "grader", "dtype"}
    text = open(cfg("sweep_cpu")).read()
    assert all(f"{k} = " in text for k in ("kl_coef", "kl_clamp", "learning_rate", "max_new_tokens"))


@pytest.mark.slow
@pytest.mark.parametrize("family, config", [("qwen2", "paper/qwen2.5-0.5b_gsm8k"),
                                            ("llama", "paper/llama3.2-1b_math"), ("olmo2", "paper/olmo2-1b_gsm8k")])
def test_a_paper_config_trains_end_to_end_on_local_files(family, config, tmp_path):
    """The GPU recipe on a CPU: a paper config + grpo_8rollouts.py (KL to the reference included) with a local tiny
    model of the family (chat template included) and local data in the hub's schema; only sizes are overridden."""
    import json

    from conftest import tiny_hf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = char_tokenizer(QWEN_TEMPLATE)
    model_dir, _ = tiny_hf(family, tmp_path, vocab_size=len(tok))
    tok.save_pretrained(model_dir)
    rows = GSM8K if config.endswith("gsm8k") else LIGHTEVAL * 2  # math_full tests on MATH-lighteval's schema
    write(rows, str(tmp_path / "data" / "train.parquet"))
    write(rows, str(tmp_path / "data" / "test.jsonl"))
    out = tmp_path / "out"
    args = [cfg(config), cfg("grpo_8rollouts"), f"--init_from={model_dir}", f"--data_path={tmp_path / 'data'}",
            f"--out_dir={out}", "--device=cpu", "--batch_size=2", "--max_steps=2", "--eval_interval=2",
            "--max_new_tokens=12", "--eval_batch_size=2"]
    train.__dict__.update(configure(DEFAULTS, args))
    assert train.grad_checkpointing and train.dtype == "bfloat16" and train.micro_batch_size == 8
    assert (train.kl_coef, train.kl_clamp, train.grader, train.advantage) == (0.001, 10.0, "paper", "grpo")
    train.main()
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [line["step"] for line in log] == [0, 1, 2] and "test_pass@1" in log[-1]
    assert all(math.isfinite(line["loss"]) for line in log[1:]) and log[1]["response_len"] > 0
    assert all(math.isfinite(line["kl"]) for line in log[1:])  # the reference model was loaded and used
    hf = AutoModelForCausalLM.from_pretrained(str(out / "ckpt"))  # an HF directory, tokenizer and template too
    assert AutoTokenizer.from_pretrained(str(out / "ckpt")).chat_template == QWEN_TEMPLATE
    ids = torch.tensor([data.encode_prompt(tok, train.task, data.load_split(train.task, "test", train.data_path)[0])])
    with torch.no_grad():
        assert torch.isfinite(hf(ids).logits).all()
