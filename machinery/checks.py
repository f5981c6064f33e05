"""
What train.py refuses before it starts: every config value that would train on garbage or crash later, gold
answers the grader cannot read, and a model that cannot hold the prompt and response lengths or the tokenizer's
ids, or whose run would not fit in memory (memory.py's estimate, whose table ends train.py --help). Each problem
ends the run with one line `error: ...` (exit code 2) before anything expensive happens.
"""
import importlib.util
import json
import math
import os
import sys

import torch

import data
from machinery import distributed as ddp
import reward
from advantage import ESTIMATORS
from machinery.checkpoint import bundled
from machinery.cli import die
from loss import AGGREGATIONS, IS_CORRECTIONS, KL_ESTIMATORS, POLICY_LOSSES, RATIO_LEVELS
from machinery.memory import GIB, PAPER_MODELS, estimate, eval_batch_fit, held_terms, memory_terms, summary
from model import read_hf_config
from machinery.precision import DTYPES

# the smallest sampling temperature: logits / temperature, and the difference of two of them (softmax subtracts
# the largest), must stay finite in float32 and bfloat16 (both max 3.4e38) for logits up to MAX_LOGIT in size,
# or sampling and the loss turn to inf and NaN. A language model's logits are far smaller (tiny-arith's on 200
# test prompts: at most 11.3 in size), and long before this bound sampling is greedy in effect: two distinct
# float32 logits of size 0.5 to 1 differ by 6e-8 or more, e^60 times the probability at a temperature of 1e-9
MAX_LOGIT = 1e4
MIN_TEMPERATURE = 2 * MAX_LOGIT / torch.finfo(torch.float32).max  # 5.9e-35


def check_config(c, world):
    """Every value that would train on garbage, or crash later, ends the run here with one line; misleading
    combinations warn."""
    choices = dict(task=data.TASKS, grader=reward.GRADERS, advantage=ESTIMATORS, loss_agg=AGGREGATIONS,
                   kl_estimator=KL_ESTIMATORS, policy_loss=POLICY_LOSSES, ratio_level=RATIO_LEVELS,
                   lr_schedule=("constant", "cosine"), dtype=DTYPES, is_correction=IS_CORRECTIONS,
                   clip_to=("pi_old", "sampler"))
    for k, allowed in choices.items():
        if c[k] not in allowed:
            die(f"{k}={c[k]!r} is not one of {', '.join(allowed)}")
    check_numbers(c)
    at_least = dict(batch_size=1, rollouts=1, ppo_epochs=1, minibatches=1, max_new_tokens=1, max_steps=1,
                    eval_interval=1, eval_batch_size=0, eval_samples=1, num_threads=1, replay_window=1,
                    max_prompt_tokens=1, max_bad_steps=1, log_interval=1, extra_rollouts=0, top_k=0, eval_problems=0,
                    train_problems=0, warmup_steps=0, weight_decay=0, grad_clip=0, kl_coef=0, kl_clamp=0, adv_eps=0,
                    entropy_coef=0, micro_batch_size=0, sample_batch_size=0, resample_tries=0, clip_high=0,
                    min_lr_ratio=0, log_samples=0, log_rollouts=0, staleness=0)
    for k, low in at_least.items():
        if c[k] < low:
            die(f"{k} must be at least {low}, got {c[k]}")
    rules = [(c["temperature"] > 0, f"temperature must be > 0 in training (got {c['temperature']}): the policy "
                                    f"gradient needs a sampling distribution; greedy pass@1 is logged at every eval"),
             (c["temperature"] <= 0 or c["temperature"] >= MIN_TEMPERATURE,
              f"temperature={c['temperature']} is below {MIN_TEMPERATURE:.1e}: logits / temperature would overflow "
              f"float32 for logits of size {MAX_LOGIT:.0e}; use a temperature >= {MIN_TEMPERATURE:.1e}"),
             (0 <= c["seed"] < 2 ** 63, f"seed must be in [0, 2**63) (torch's and numpy's seeds), got {c['seed']}"),
             (0 < c["top_p"] <= 1, f"top_p must be in (0, 1], got {c['top_p']}"),
             (0 < c["learning_rate"] <= 1,
              f"learning_rate must be in (0, 1], got {c['learning_rate']}: AdamW moves each weight by up to about lr "
              f"a step (its update is normalized), so above 1 the first step makes the policy noise (from 3.4e37 "
              f"its step overflows float32)"),
             (c["learning_rate"] * c["weight_decay"] < 1,
              f"learning_rate * weight_decay must be below 1, got {c['learning_rate'] * c['weight_decay']:g}: AdamW "
              f"multiplies every weight by 1 - lr * weight_decay a step, which would zero or flip them"),
             (0 <= c["clip_low"] <= 1, f"clip_low must be in [0, 1] (1 - clip_low is the lowest ratio; 1: no lower "
                                       f"bound, as CISPO), got {c['clip_low']}"),
             (c["dual_clip"] == 0 or c["dual_clip"] > 1, f"dual_clip must be 0 (off) or > 1, got {c['dual_clip']}"),
             (c["sampler_dtype"] in ("",) + DTYPES, f"sampler_dtype={c['sampler_dtype']!r} is not one of "
                                                    f"{', '.join(DTYPES)}, or '' (the same as dtype)"),
             (c["is_cap"] > 1, f"is_cap must be > 1 (tis caps weights at it, mis keeps ratios in [1/is_cap, is_cap]), "
                               f"got {c['is_cap']}"),
             (c["clip_to"] == "pi_old" or c["is_correction"] == "none",
              f"clip_to=sampler with is_correction={c['is_correction']}: coupled PPO's ratio is already to the "
              f"sampler, so a correction of pi_old against the sampler would count the gap twice; use one"),
             (c["m2_threshold"] > 0, f"m2_threshold must be > 0 (m2po keeps tokens whose mean squared log-ratio "
                                     f"is below it), got {c['m2_threshold']}"),
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
                (c["truncated_logprobs"] and c["top_k"] == 0 and c["top_p"] == 1,
                 "truncated_logprobs=True does nothing without top_k or top_p: nothing is truncated"),
                (c["warmup_steps"] > 0 and c["lr_schedule"] == "constant",
                 f"warmup_steps={c['warmup_steps']} does nothing with lr_schedule=constant (use cosine)")]
    for on, msg in warnings:
        if on:
            print(f"warning: {msg}", file=sys.stderr)


def check_numbers(c):
    """Numbers that pass every range check and still break a computation: NaN or infinite floats (from a config
    file's float("nan") or 1e999: every comparison lets NaN pass), integers beyond torch's 64 bits (2**70 passes
    Python's comparisons, then torch.set_num_threads or tensor.split overflow)."""
    for k, v in c.items():
        if isinstance(v, float) and not math.isfinite(v):
            die(f"{k} must be a finite number, got {v}")
        if type(v) is int and not -2 ** 63 <= v < 2 ** 63:
            die(f"{k}={v} does not fit in 64 bits (torch's integers)")


def check_answers(task, splits, strict, grader):
    """Each split's gold answers in a form the grader reads: a response that states one (stated) must score 1. A
    task whose answers never parse (GSM8K data as --task=math, answers without their '####') would train on a
    reward of 0 and evaluate to 0 without a word: it stops here; a few that never parse are counted in a warning
    (those problems always score 0). splits: {name: problems}."""
    for name, problems in splits.items():
        bad = [p["answer"] for p in problems
               if not reward.score(task, stated(task, p["answer"]), p["answer"], strict, grader=grader)]
        if bad and len(bad) == len(problems):
            die(f"no gold answer of the {name} split reads as a {task} answer under grader={grader} (the first: "
                f"{bad[0]!r:.60}): every reward would be 0; check that --task matches the data (gsm8k answers end "
                f"with '#### <number>', math ones hold a \\boxed{{}} or are the bare answer)")
        if bad and ddp.rank == 0:
            print(f"warning: {len(bad)} of the {len(problems)} gold answers of the {name} split do not read as "
                  f"{task} answers under grader={grader} (the first: {bad[0]!r:.60}): those problems always score 0",
                  file=sys.stderr)


def stated(task, answer):
    """A response that states the gold `answer` in the form the task's prompt asks for (data.INSTRUCTION)."""
    if task == "gsm8k":
        return answer if "####" in answer else f"#### {answer}"
    if task in ("math", "math_full"):
        return answer if "\\boxed" in answer else f"\\boxed{{{answer}}}"
    return answer


def device_ok(device):
    """auto, cpu, cuda, or cuda:N for a GPU torch sees (on a machine without one, distributed.setup says so)."""
    if device in ("auto", "cpu", "cuda"):
        return True
    index = device.removeprefix("cuda:")
    return index != device and index.isdigit() and (not torch.cuda.is_available()
                                                    or int(index) < torch.cuda.device_count())


def check_run(path, tok, c, world, device, longest_prompt, problems, eval_sets):
    """train.py's checks of its data and model before it loads the model: the gold answers of what it trains on
    (problems) and evaluates (eval_sets: {split: problems}) readable by the grader (check_answers), the tokenizer's
    ids within the model's vocabulary (check_vocab), then check_model, whose result it returns."""
    check_answers(c["task"], dict(eval_sets, trained=problems), c["strict"], c["grader"])
    check_vocab(model_config(path), tok, path)
    return check_model(path, c, world, device, longest_prompt, max(map(len, eval_sets.values())))


def check_model(path, c, world, device, longest_prompt, problems=0):
    """Before loading the model: its positions fit the longest prompt (in tokens) and a response, and the run fits
    in the device's memory (printed beside it on a GPU). problems: the most problems an evaluated split has (0: the
    config's eval_problems, or unknown). Returns the evaluation's prompts per sampler call: eval_batch_size, or
    with eval_batch_size = 0 as many as fit in the memory the rest of the run leaves."""
    cfg = model_config(path)
    check_positions(cfg, longest_prompt, c["max_new_tokens"])
    few = 0 < c["train_problems"] <= data.TRAINED_SUBSET  # the trained subset is evaluated with more samples
    samples = max(c["eval_samples"], data.TRAINED_SAMPLES) if few else c["eval_samples"]
    problems = max(problems or c["eval_problems"], c["train_problems"] if few else 0)
    return check_fit(cfg, c, device, longest_prompt + c["max_new_tokens"], samples, -(-problems // world), world)


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


def check_positions(cfg, longest_prompt, max_new_tokens):
    """The longest prompt + max_new_tokens within the model's positions."""
    if cfg.get("max_positions") and longest_prompt + max_new_tokens > cfg["max_positions"]:
        die(f"the longest prompt ({longest_prompt} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's max_position_embeddings ({cfg['max_positions']}); lower max_new_tokens or max_prompt_tokens")


def check_vocab(cfg, tok, path):
    """The tokenizer's ids within the model's vocab_size: a larger one (another model's tokenizer, tokens added
    without resizing the embedding) would fail at its first lookup with an IndexError."""
    size = max(tok.get_vocab().values()) + 1
    if size > cfg["vocab_size"]:
        die(f"the tokenizer in {path} has ids up to {size - 1} but the model's vocab_size is {cfg['vocab_size']}: "
            f"use the model's own tokenizer (or resize the model's embeddings and save it again)")


def check_fit(cfg, c, device, seq_len, samples, problems=0, world=None):
    """The run's memory estimate (memory_terms) within the device's: one line `error: ...` naming the phase that
    does not fit and the knobs that shrink it. samples: responses per evaluated prompt; problems: the most problems
    a rank's evaluation has (0: unknown); world: ranks (None: evaluate.py, no training). Returns the evaluation's
    prompts per sampler call."""
    have = device_memory(device)
    prompts = c["eval_batch_size"] or eval_batch_fit(cfg, c, device, seq_len, samples, have, world is not None)
    if not prompts:
        die(f"the model and its optimizer state leave no room in the {have / GIB:.1f} GiB free on {device} to "
            f"evaluate one prompt: {summary(dict(held=held_terms(cfg, c, world is not None)), 'held')}")
    prompts = min(prompts, problems or prompts)
    phases = memory_terms(cfg, c, device, seq_len, world, prompts, samples)
    need, peak = estimate(phases)
    if need > have:
        fixes = dict(held="the model and its optimizer state alone do not fit: use a smaller model, or kl_coef=0 "
                          "(no reference model)",
                     sampling="lower sample_batch_size (prompts per sampler call) or max_new_tokens",
                     evaluation="lower eval_batch_size (0: as many as fit)",
                     update="lower micro_batch_size, or set grad_checkpointing=True")[peak]
        fallback = "; or pip install flash-attn" if any(n.startswith("SDPA") for n, _ in phases.get(peak, ())) else ""
        die(f"the run would need ~{need / GIB:.1f} GiB on {device} but {have / GIB:.1f} GiB are free: "
            f"{summary(phases, peak)}; {fixes}{fallback}")
    if device.startswith("cuda") and ddp.rank == 0:
        print(f"memory: ~{need / GIB:.1f} GiB of the {have / GIB:.1f} GiB free on {device}: {summary(phases, peak)}")
    return prompts


def device_memory(device):
    """Bytes the run may use: a GPU's free memory now (its total less the CUDA context and other processes), or the
    machine's RAM."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_help(c):
    """train.py --help's last lines: the estimate of the config `c` (memory_terms), phase by phase, beside the GPU's
    free memory when there is one. The model's shape comes from init_from's config.json (a local directory or the
    Hugging Face cache) or, offline, PAPER_MODELS; prompts count as max_prompt_tokens long."""
    path = os.path.join(c["out_dir"], "ckpt") if c["init_from"] == "resume" else bundled(c["init_from"])
    cached = None
    if not os.path.isdir(path) and path.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(path, "config.json")  # a path if downloaded before, else None or a marker
    if os.path.isfile(os.path.join(path, "config.json")):
        cfg, source = model_config(path), f"{path}/config.json"
    elif isinstance(cached, str):
        cfg, source = model_config(os.path.dirname(cached)), "config.json in the Hugging Face cache"
    elif path in PAPER_MODELS:
        cfg, source = read_hf_config(PAPER_MODELS[path]), "its shape from memory.PAPER_MODELS"
    else:
        return (f"\n\n# memory\nno estimate: {path!r} is not a model directory here, nor in the Hugging Face cache, "
                f"nor one of the paper's models")
    gpu_config = torch.cuda.is_available() or c["dtype"] == "bfloat16"  # auto: a bf16 config is planned for a GPU
    device = c["device"] if c["device"] != "auto" else "cuda" if gpu_config else "cpu"
    seq_len = c["max_prompt_tokens"] + c["max_new_tokens"]
    gpu = not device.startswith("cuda") or torch.cuda.is_available()
    have = device_memory(device) if gpu else None
    prompts = c["eval_batch_size"] or have and eval_batch_fit(cfg, c, device, seq_len, c["eval_samples"], have, True)
    phases = memory_terms(cfg, c, device, seq_len, 1, prompts, c["eval_samples"])
    need, peak = estimate(phases)
    lines = ["\n\n# memory (memory.py: the estimate train.py checks before it loads the model; GiB)",
             f"{c['init_from']} ({source}), prompts of {c['max_prompt_tokens']} + {c['max_new_tokens']} tokens, "
             f"device {device}" + (", eval_batch_size auto: " + (f"{prompts} prompts" if have else "sized on the GPU")
                                   if not c["eval_batch_size"] else "")]
    for phase, terms in phases.items():
        lines.append(f"{phase:<11}{sum(b for _, b in terms) / GIB:6.1f}  "
                     + ", ".join(f"{name} {b / GIB:.1f}" for name, b in terms))
    budget = f"{have / GIB:.1f} GiB free on {device}" if have else "no GPU here to compare with"
    lines.append(f"{'peak':<11}{need / GIB:6.1f}  held + {peak}; {budget}")
    return "\n".join(lines)
