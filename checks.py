"""
What train.py refuses before it starts: every config value that would train on garbage or crash later, and a
model that cannot hold the prompt and response lengths or whose KV cache would not fit in memory. Each problem
ends the run with one line `error: ...` (exit code 2) before anything expensive happens.
"""
import json
import os
import sys

import torch

import data
import evaluate
import reward
from advantage import ESTIMATORS
from configurator import die
from loss import AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES, RATIO_LEVELS
from model import kv_cache_bytes, read_hf_config


def check_config(c, world):
    """Every value that would train on garbage, or crash later, ends the run here with one line; misleading
    combinations warn."""
    choices = dict(task=data.TASKS, grader=reward.GRADERS, advantage=ESTIMATORS, loss_agg=AGGREGATIONS,
                   kl_estimator=KL_ESTIMATORS, policy_loss=POLICY_LOSSES, ratio_level=RATIO_LEVELS,
                   lr_schedule=("constant", "cosine"), dtype=("float32", "bfloat16"))
    for k, allowed in choices.items():
        if c[k] not in allowed:
            die(f"{k}={c[k]!r} is not one of {', '.join(allowed)}")
    at_least = dict(batch_size=1, rollouts=1, ppo_epochs=1, minibatches=1, max_new_tokens=1, max_steps=1,
                    eval_interval=1, eval_batch_size=1, eval_samples=1, num_threads=1, replay_window=1,
                    max_prompt_tokens=1, max_bad_steps=1, log_interval=1, extra_rollouts=0, top_k=0, eval_problems=0,
                    train_problems=0, warmup_steps=0, weight_decay=0, grad_clip=0, kl_coef=0, kl_clamp=0, adv_eps=0,
                    entropy_coef=0, micro_batch_size=0, sample_batch_size=0, resample_tries=0, clip_high=0,
                    min_lr_ratio=0, log_samples=0, log_rollouts=0)
    for k, low in at_least.items():
        if c[k] < low:
            die(f"{k} must be at least {low}, got {c[k]}")
    rules = [(c["temperature"] > 0, f"temperature must be > 0 in training (got {c['temperature']}): the policy "
                                    f"gradient needs a sampling distribution; greedy pass@1 is logged at every eval"),
             (0 < c["top_p"] <= 1, f"top_p must be in (0, 1], got {c['top_p']}"),
             (c["learning_rate"] > 0, f"learning_rate must be > 0, got {c['learning_rate']}"),
             (0 <= c["clip_low"] <= 1, f"clip_low must be in [0, 1] (1 - clip_low is the lowest ratio), got {c['clip_low']}"),
             (c["dual_clip"] == 0 or c["dual_clip"] > 1, f"dual_clip must be 0 (off) or > 1, got {c['dual_clip']}"),
             (c["min_lr_ratio"] <= 1, f"min_lr_ratio must be at most 1, got {c['min_lr_ratio']}"),
             (c["device"] in ("auto", "cpu", "cuda") or c["device"].removeprefix("cuda:").isdigit(),
              f"device={c['device']!r} is not one of auto, cpu, cuda, cuda:N"),
             (c["advantage"] != "rloo" or c["rollouts"] >= 2,
              "advantage=rloo needs rollouts >= 2 (its baseline is the mean of the *other* rollouts)"),
             (c["advantage"] != "extra" or c["extra_rollouts"] >= 1, "advantage=extra needs extra_rollouts >= 1"),
             (c["advantage"] == "extra" or not c["extra_rollouts"],
              f"extra_rollouts={c['extra_rollouts']} is only used by advantage=extra"),
             (not c["filter_zero_variance"] or c["rollouts"] + c["extra_rollouts"] >= 2,
              "filter_zero_variance needs 2 or more responses per prompt (one response always agrees with itself)"),
             (not c["resample_tries"] or c["filter_zero_variance"], "resample_tries needs filter_zero_variance=True"),
             (c["batch_size"] >= world and c["batch_size"] % world == 0,
              f"batch_size={c['batch_size']} must be a multiple of the world size {world}")]
    for ok, msg in rules:
        if not ok:
            die(msg)
    per_rank = c["batch_size"] // world * c["rollouts"]
    if per_rank % c["minibatches"]:
        die(f"minibatches={c['minibatches']} must divide the responses trained per rank ({per_rank})")
    if c["advantage"] in ("grpo", "dr_grpo") and c["rollouts"] == 1:
        print(f"warning: advantage={c['advantage']} with rollouts=1 has no group: it is the same as 'none'",
              file=sys.stderr)


def check_model(path, c, world, device, longest_prompt):
    """Before loading the model: its positions fit the longest prompt (in tokens) and a response, and the
    sampler's KV cache fits in memory (a typo in max_new_tokens or sample_batch_size would otherwise try to
    allocate 80 GB)."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            cfg = read_hf_config(json.load(f))
    except (OSError, ValueError) as e:
        die(f"{path}/config.json is missing or unreadable ({type(e).__name__}); init_from must be a Hugging Face "
            f"model directory")
    longest = longest_prompt + c["max_new_tokens"]
    if cfg.get("max_positions") and longest > cfg["max_positions"]:
        die(f"the longest prompt ({longest_prompt} tokens) + max_new_tokens ({c['max_new_tokens']}) exceeds the "
            f"model's max_position_embeddings ({cfg['max_positions']}); lower max_new_tokens or max_prompt_tokens")
    few = 0 < c["train_problems"] <= evaluate.TRAINED_SUBSET  # the trained subset is evaluated with more samples
    rows = max((c["sample_batch_size"] or c["batch_size"] // world) * (c["rollouts"] + c["extra_rollouts"]),
               c["eval_batch_size"] * max(c["eval_samples"], evaluate.TRAINED_SAMPLES if few else 1))
    need = kv_cache_bytes(cfg, rows, longest, torch.bfloat16 if c["dtype"] == "bfloat16" else torch.float32)
    have = torch.cuda.mem_get_info(device)[1] if device.startswith("cuda") else \
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        die(f"the sampler's KV cache would need {need / 2 ** 30:.1f} GiB ({rows} rows x {longest} tokens) but "
            f"{device} has {have / 2 ** 30:.1f} GiB; lower sample_batch_size, eval_batch_size or max_new_tokens")
