"""
What train.py refuses before it starts: every config value that would train on garbage or crash later, and a
model that cannot hold the prompt and response lengths or whose KV cache would not fit in memory. Each problem
ends the run with one line `error: ...` (exit code 2) before anything expensive happens.
"""
import importlib.util
import json
import math
import os
import sys

import torch

import data
import evaluate
import reward
from advantage import ESTIMATORS
from configurator import die
from loss import AGGREGATIONS, IS_CORRECTIONS, KL_ESTIMATORS, POLICY_LOSSES, RATIO_LEVELS
from model import kv_cache_bytes, read_hf_config
from precision import DTYPES


def check_config(c, world):
    """Every value that would train on garbage, or crash later, ends the run here with one line; misleading
    combinations warn."""
    choices = dict(task=data.TASKS, grader=reward.GRADERS, advantage=ESTIMATORS, loss_agg=AGGREGATIONS,
                   kl_estimator=KL_ESTIMATORS, policy_loss=POLICY_LOSSES, ratio_level=RATIO_LEVELS,
                   lr_schedule=("constant", "cosine"), dtype=DTYPES, is_correction=IS_CORRECTIONS)
    for k, allowed in choices.items():
        if c[k] not in allowed:
            die(f"{k}={c[k]!r} is not one of {', '.join(allowed)}")
    for k, v in c.items():  # float("nan") or 1e999 from a config file: every comparison below would let NaN pass
        if isinstance(v, float) and not math.isfinite(v):
            die(f"{k} must be a finite number, got {v}")
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
             (0 <= c["clip_low"] <= 1, f"clip_low must be in [0, 1] (1 - clip_low is the lowest ratio; 1: no lower "
                                       f"bound, as CISPO), got {c['clip_low']}"),
             (c["dual_clip"] == 0 or c["dual_clip"] > 1, f"dual_clip must be 0 (off) or > 1, got {c['dual_clip']}"),
             (c["sampler_dtype"] in ("",) + DTYPES, f"sampler_dtype={c['sampler_dtype']!r} is not one of "
                                                    f"{', '.join(DTYPES)}, or '' (the same as dtype)"),
             (c["is_cap"] > 1, f"is_cap must be > 1 (tis caps weights at it, mis keeps ratios in [1/is_cap, is_cap]), "
                               f"got {c['is_cap']}"),
             (c["min_lr_ratio"] <= 1, f"min_lr_ratio must be at most 1, got {c['min_lr_ratio']}"),
             (device_ok(c["device"]), f"device={c['device']!r} is not one of auto, cpu, cuda, cuda:N"
                                      + (f" with N < {torch.cuda.device_count()} (the GPUs torch sees)"
                                         if torch.cuda.is_available() else "")),
             (not c["data_path"] or c["task"] != "arith",
              f"data_path={c['data_path']!r} is set but task='arith' is built in and reads no files; pass the task "
              f"of the data (--task={'|'.join(data.HUB)})"),
             (not c["wandb_log"] or importlib.util.find_spec("wandb") is not None,
              "wandb_log=True but wandb is not installed: pip install wandb, or drop wandb_log"),
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
    warnings = [(c["advantage"] in ("grpo", "dr_grpo") and c["rollouts"] == 1,
                 f"advantage={c['advantage']} with rollouts=1 has no group: it is the same as 'none'"),
                (c["kl_in_reward"] and c["kl_coef"] == 0, "kl_in_reward=True does nothing with kl_coef=0"),
                (c["warmup_steps"] > 0 and c["lr_schedule"] == "constant",
                 f"warmup_steps={c['warmup_steps']} does nothing with lr_schedule=constant (use cosine)")]
    for on, msg in warnings:
        if on:
            print(f"warning: {msg}", file=sys.stderr)


def device_ok(device):
    """auto, cpu, cuda, or cuda:N for a GPU torch sees (on a machine without one, distributed.setup says so)."""
    if device in ("auto", "cpu", "cuda"):
        return True
    index = device.removeprefix("cuda:")
    return index != device and index.isdigit() and (not torch.cuda.is_available()
                                                    or int(index) < torch.cuda.device_count())


def check_model(path, c, world, device, longest_prompt):
    """Before loading the model: its positions fit the longest prompt (in tokens) and a response, and the
    sampler's KV cache fits in memory (a typo in max_new_tokens or sample_batch_size would otherwise try to
    allocate 80 GB)."""
    def eval_rows(problems, samples):  # an evaluation's sampler call: eval_batch_size of a rank's problems at most
        return min(c["eval_batch_size"], -(-problems // world) if problems else c["eval_batch_size"]) * samples
    few = 0 < c["train_problems"] <= evaluate.TRAINED_SUBSET  # the trained subset is evaluated with more samples
    rows = max((c["sample_batch_size"] or c["batch_size"] // world) * (c["rollouts"] + c["extra_rollouts"]),
               eval_rows(c["eval_problems"], c["eval_samples"]),
               eval_rows(c["train_problems"], max(c["eval_samples"], evaluate.TRAINED_SAMPLES)) if few else 0)
    check_fit(model_config(path), longest_prompt, c["max_new_tokens"], rows, c["dtype"], device,
              knobs="sample_batch_size, eval_batch_size")


def model_config(path):
    """The numbers of path/config.json the model needs (model.read_hf_config), or one line saying what is wrong."""
    config = os.path.join(path, "config.json")
    try:
        with open(config, "rb") as f:
            return read_hf_config(json.loads(f.read().decode("utf-8")))
    except FileNotFoundError:
        die(f"{config} is missing: init_from must be a Hugging Face model directory (config.json, *.safetensors, "
            f"tokenizer files)")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # unreadable, not JSON, keys missing
        die(f"{config} is not a transformers model config ({type(e).__name__}: {' '.join(str(e).split())[:120]}): "
            f"copy the base model's config.json or save the model again")


def check_fit(cfg, longest_prompt, max_new_tokens, rows, dtype, device, knobs="eval_batch_size"):
    """The longest prompt + max_new_tokens within the model's positions, and `rows` sequences of that length
    in the sampler's KV cache within the device's memory (`knobs`: the batch sizes that set rows)."""
    longest = longest_prompt + max_new_tokens
    if cfg.get("max_positions") and longest > cfg["max_positions"]:
        die(f"the longest prompt ({longest_prompt} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's max_position_embeddings ({cfg['max_positions']}); lower max_new_tokens or max_prompt_tokens")
    need = kv_cache_bytes(cfg, rows, longest, torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    have = torch.cuda.mem_get_info(device)[1] if device.startswith("cuda") else \
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > have:
        die(f"the sampler's KV cache would need {need / 2 ** 30:.1f} GiB ({rows} rows x {longest} tokens) but "
            f"{device} has {have / 2 ** 30:.1f} GiB; lower {knobs} or max_new_tokens")
