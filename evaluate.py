"""
Evaluation: sampled pass@1 and unbiased pass@k under both graders, greedy pass@1, how many problems are
always / never solved, and the responses themselves, on a task's train and test splits.

    python evaluate.py --init_from=out/arith --n_samples=8     # a run's out_dir (its ckpt) or a model dir
    python evaluate.py --help
"""
from machinery.cli import quiet_interrupt

quiet_interrupt(__name__)  # first: a Ctrl-C during the imports below ends with one line, not a traceback

import json
import math
import os
import sys

import torch

import data
from machinery import distributed as ddp
import reward
from rollout import completions, generate, prompt_generators

def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, Codex): 1 - C(n-c, k) / C(n, k)."""
    # EXERCISE pass_at_k: return the probability that k of the n samples, drawn without replacement, hold a
    # correct one (tests: tests/test_evaluate.py -k pass_at_k)
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)
    # END EXERCISE


@torch.no_grad()
def sample_and_grade(model, tok, task, problems, n, temperature=1.0, max_new_tokens=16, batch_size=256,
                     generators=None, top_k=0, top_p=1.0, strict=True, ids=None, keep=0, progress=False,
                     compile=False):
    """Sample n responses to each problem and grade each under every grader.
    generators: one numpy Generator per problem (rollout.prompt_generators), or one torch.Generator, or None.
    ids: the problems' indices in their split (default 0, 1, ...); the responses of those below `keep` are
    returned as samples. progress: a bar over the sampler calls, on stderr, from rank 0 (evaluate.py's CLI).
    compile: rollout.generate's. Returns ({grader: [correct count per problem]}, [sample dicts])."""
    ids = range(len(problems)) if ids is None else ids
    correct, samples, stops = {g: [] for g in reward.GRADERS}, [], data.stop_ids(tok)
    batches = range(0, len(problems), batch_size)
    if progress and ddp.rank == 0:  # a whole split takes minutes of sampling: show it moving
        from tqdm import tqdm
        batches = tqdm(batches, desc="greedy" if temperature == 0 else f"{n} samples", unit="call", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
    for i in batches:
        chunk = problems[i:i + batch_size]
        prompts = [data.encode_prompt(tok, task, p) for p in chunk]
        g = generators[i:i + batch_size] if isinstance(generators, list) else generators
        rollout = generate(model, prompts, n, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                           top_p=top_p, eos_id=stops, generator=g, compile=compile)
        texts = completions(rollout, tok)
        for j, problem in enumerate(chunk):
            for s in range(n):
                text = texts[j * n + s]
                rewards = {grader: reward.score(task, text, problem["answer"], strict, grader=grader)
                           for grader in reward.GRADERS}
                if ids[i + j] < keep:
                    samples.append(dict(index=ids[i + j], sample=s, prompt=problem["prompt"], response=text,
                                        answer=problem["answer"], finished=bool(rollout.finished[j * n + s]),
                                        **{f"reward_{grader}": r for grader, r in rewards.items()}))
                for grader, r in rewards.items():
                    if s == 0:
                        correct[grader].append(0)
                    correct[grader][-1] += int(r)
    return correct, samples


def totals(correct, n, ks, grader):
    """Sums over problems of pass@k (k <= n) under `grader`, pass@1 under the others (suffixed _<grader>), and
    with n > 1 the number of problems solved by all n / by none of the samples (sharpening vs discovery).
    Sums, not means, so that ranks' shards add up; divide by the number of problems."""
    out = {f"pass@{k}": sum(pass_at_k(n, c, k) for c in correct[grader]) for k in ks if k <= n}
    out.update({f"pass@1_{g}": sum(c / n for c in counts) for g, counts in correct.items() if g != grader})
    if n > 1:
        out["solved_all"] = sum(c == n for c in correct[grader])
        out["solved_none"] = sum(c == 0 for c in correct[grader])
    return out


def evaluate(model, tok, task, problems, n=1, ks=(1,), greedy=True, grader="nanorft", keep=0, **sampling):
    """Means over `problems` of totals(), plus greedy_pass@1 (temperature 0) when greedy, and "samples": the
    responses of the first `keep` problems. sampling: sample_and_grade's keyword arguments."""
    was_training = model.training
    model.eval()
    correct, samples = sample_and_grade(model, tok, task, problems, n, keep=keep, **sampling)
    size = max(len(problems), 1)  # none: a rank's empty shard (more ranks than problems), whose means weigh 0
    out = {k: v / size for k, v in totals(correct, n, ks, grader).items()}
    if greedy:
        greedy_correct, _ = sample_and_grade(model, tok, task, problems, 1, **dict(sampling, temperature=0.0))
        out["greedy_pass@1"] = sum(greedy_correct[grader]) / size
    model.train(was_training)
    return dict(out, samples=samples)


def evaluate_splits(model, tok, task, splits, step, seed, n=1, keep=0, grader="nanorft", **sampling):
    """train.py's evaluation: for each split of `splits` ({name: problems}), pass@1 (sampled, and greedy) under
    both graders, sharded over ranks (problem i on rank i % world); with n > 1 responses per problem also pass@k
    and how many problems are always or never solved; a "trained" split (a small training subset) gets
    data.TRAINED_SAMPLES responses and pass@1 only. Returns ({"<split>_<metric>": value}, the responses of the first
    `keep` problems of each split). Samples are seeded by (seed, split, step, problem): the same for every run
    of a seed, whatever its design choice, batching or world size (common random numbers)."""
    out, samples = {}, []
    for kind, (name, problems) in enumerate(splits.items(), start=1):
        trained = name == "trained"
        k_max = max(n, data.TRAINED_SAMPLES) if trained else n
        ks = (1,) if trained else [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= n]
        r, shard = sharded(model, tok, task, problems, (seed, kind, step), n=k_max, greedy=not trained,
                           grader=grader, ks=ks, keep=0 if trained else keep, **sampling)
        samples += [dict(split=name, **s) for s in shard]
        out.update({f"{name}_{'greedy' if k == 'greedy_pass@1' else k}": v for k, v in r.items()})
    return out, samples


def sharded(model, tok, task, problems, key, **kwargs):
    """evaluate() sharded over ranks: problem i on rank i % world, sampled from its own stream
    prompt_generators(*key, i) (key: (seed, kind, step)), so the result is one process's at any world size.
    Returns (the means over all the problems, every rank's samples in problem order)."""
    mine = range(ddp.rank, len(problems), ddp.world)
    r = evaluate(model, tok, task, [problems[i] for i in mine], generators=prompt_generators(*key, mine),
                 ids=list(mine), **kwargs)
    samples = sorted(ddp.gather_objects(r.pop("samples")), key=lambda s: (s["index"], s["sample"]))
    return {k: ddp.all_sum(v * len(mine)) / len(problems) for k, v in r.items()}, samples  # shard sums -> means


# -----------------------------------------------------------------------------
init_from = "assets/tiny-arith"  # model directory (or hub id), or a train.py out_dir (its ckpt is evaluated)
task = "arith"  # arith | gsm8k | math | math_full (see train.py)
data_path = ""  # local directory or .jsonl/.parquet file instead of the hub dataset
splits = "train,test"  # comma-separated splits to evaluate
eval_problems = 0  # the first this many problems of each split; 0 = the whole split
n_samples = 8  # responses sampled per problem (pass@k needs k <= n_samples)
temperature = 1.0  # sampling temperature of the sampled metrics
top_k = 0  # 0 = off
top_p = 1.0  # 1.0 = off
max_new_tokens = 8  # response length limit
eval_batch_size = 128  # prompts per sampler call; 0 = as many as fit in memory (checks.py)
seed = 0  # sampler seed (each problem gets its own generator, as in train.py)
device = "auto"  # auto (cuda if there is a GPU, else cpu) | cpu | cuda | cuda:N
dtype = "float32"  # float32 | bfloat16 (autocast; with flash-attn on a GPU, FlashAttention's prefill)
compile = False  # compile the sampler's decode step (torch.compile; CUDA graphs on a GPU): see docs/speed.md
grader = "nanorft"  # nanorft | paper: the grader of pass@k (pass@1 under the other is reported beside it)
strict = True  # GSM8K: score only "#### <number>" (False: the last number)
log_samples = 32  # problems per split whose responses go to the samples file
out = ""  # JSON output path (responses: the same name with _samples.jsonl); default <model dir>/eval.json
# -----------------------------------------------------------------------------


def main():
    from machinery import checkpoint
    from machinery import distributed
    from machinery.checks import (MIN_TEMPERATURE, check_answers, check_fit, check_numbers, check_positions,
                                  check_vocab, device_ok, model_config)
    from configurator import configure
    from machinery.cli import die
    from model import Transformer, load_tokenizer, resolve
    c = configure({k: globals()[k] for k in CONFIG_KEYS}, sys.argv[1:], source=__file__)
    split_names = c["splits"].split(",")
    check_numbers(c)
    checks = [(c["task"] in TASKS, f"task={c['task']!r} is not one of {', '.join(TASKS)}"),
              (all(s in ("train", "test") for s in split_names), f"splits={c['splits']!r}: use train, test or both"),
              (c["n_samples"] >= 1, f"n_samples must be at least 1, got {c['n_samples']}"),
              (c["eval_problems"] >= 0, f"eval_problems must be >= 0 (0 = all), got {c['eval_problems']}"),
              (c["temperature"] == 0 or c["temperature"] >= MIN_TEMPERATURE,  # logits / temperature stay finite
               f"temperature must be 0 (greedy) or >= {MIN_TEMPERATURE:.1e}, got {c['temperature']}"),
              (0 < c["top_p"] <= 1, f"top_p must be in (0, 1], got {c['top_p']}"),
              (0 <= c["seed"] < 2 ** 63, f"seed must be in [0, 2**63) (numpy's seeds), got {c['seed']}"),
              (c["top_k"] >= 0 and c["max_new_tokens"] >= 1 and c["eval_batch_size"] >= 0 and c["log_samples"] >= 0,
               "top_k, eval_batch_size and log_samples must be >= 0, max_new_tokens >= 1"),
              (c["grader"] in reward.GRADERS, f"grader={c['grader']!r} is not one of {', '.join(reward.GRADERS)}"),
              (c["dtype"] in ("float32", "bfloat16"), f"dtype must be float32 or bfloat16, not {c['dtype']!r}")]
    for ok, msg in checks:
        if not ok:
            die(msg)
    path = checkpoint.model_dir(c["init_from"])  # a train.py out_dir: its last whole checkpoint
    # the results go beside a run's log (a checkpoint directory is replaced by the run's next save)
    out_path = c["out"] or os.path.join(c["init_from"] if os.path.isdir(c["init_from"]) else ".", "eval.json")
    if os.path.isdir(out_path):
        die(f"out={out_path!r} is a directory; pass a file name such as {os.path.join(out_path, 'eval.json')!r}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out_path))):
        die(f"out={out_path!r}: its directory does not exist; create it or pass another --out")
    samples_path = os.path.splitext(out_path)[0] + "_samples.jsonl"
    first = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes: the others may not race it
    for p in (out_path, samples_path):  # writable, before the evaluation (a run in a read-only directory)
        try:
            new = not os.path.exists(p)
            if first:
                open(p, "a").close()  # "a": an earlier result stays as it is
            elif not os.access(p if not new else os.path.dirname(os.path.abspath(p)), os.W_OK):
                raise OSError(13, "Permission denied")
            if new and first:
                os.remove(p)
        except OSError as e:
            die(f"cannot write {p} ({e.strerror or e}); pass a writable --out")
    if not device_ok(c["device"]):
        die(f"device={c['device']!r} is not one of auto, cpu, cuda, cuda:N")
    device = distributed.setup(c["device"])
    path = resolve(path)
    tok = load_tokenizer(path)
    split_problems = {split: data.load_split(c["task"], split, c["data_path"])[:c["eval_problems"] or None]
                      for split in split_names}
    longest = max(max(data.prompt_lengths(tok, c["task"], problems, split))
                  for split, problems in split_problems.items())
    check_answers(c["task"], split_problems, c["strict"], c["grader"])
    cfg = model_config(path)
    check_positions(cfg, longest, c["max_new_tokens"])
    check_vocab(cfg, tok, path)
    batch_size = check_fit(cfg, c, device, longest + c["max_new_tokens"], c["n_samples"],
                           max(map(len, split_problems.values())))  # eval_batch_size, or (0) what fits
    model = Transformer.from_pretrained(path, device=device)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= c["n_samples"]]
    results = dict(init_from=c["init_from"], task=c["task"], n_samples=c["n_samples"], temperature=c["temperature"],
                   grader=c["grader"])
    all_samples = []
    for kind, split in enumerate(split_names, start=1):
        with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=c["dtype"] == "bfloat16"):
            results[split], shard = sharded(model, tok, c["task"], split_problems[split], (c["seed"], kind, 0),
                                            n=c["n_samples"], ks=ks, grader=c["grader"], keep=c["log_samples"],
                                            temperature=c["temperature"], max_new_tokens=c["max_new_tokens"],
                                            batch_size=batch_size, top_k=c["top_k"], top_p=c["top_p"],
                                            strict=c["strict"], progress=True, compile=c["compile"])
        all_samples += [dict(split=split, **s) for s in shard]
        if distributed.rank == 0:
            print(f"{split:>5}: " + "  ".join(f"{k} {v:.4f}" for k, v in results[split].items()))
    distributed.teardown()
    if distributed.rank != 0:
        return
    for p, text in ((out_path, json.dumps(results, indent=2)), (samples_path, "".join(json.dumps(s) + "\n"
                                                                                       for s in all_samples))):
        try:  # via a temporary file: a full disk leaves an earlier result whole
            with open(p + ".tmp", "w") as f:
                f.write(text)
            os.replace(p + ".tmp", p)
        except OSError as e:
            if os.path.exists(p + ".tmp"):
                os.remove(p + ".tmp")
            die(f"could not write {p} ({e.strerror or e}); " + ("the results printed above are not saved" if
                                                               p == out_path else f"{out_path} holds the results"))
    print(f"wrote {out_path} and {samples_path}")


CONFIG_KEYS = [k for k, v in dict(globals()).items() if not k.startswith("_") and not k.isupper()
               and isinstance(v, (int, float, bool, str))]
TASKS = ("arith", *data.HUB)

if __name__ == "__main__":
    main()
