"""
Evaluation: sampled pass@1, greedy pass@1 and unbiased pass@k on a task's train and test splits.

    python evaluate.py --init_from=out/arith --n_samples=8
"""
import json
import math
import os
import sys

import torch

import data
import reward
from configurator import configure, die
from rollout import completions, generate


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021, Codex): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@torch.no_grad()
def correct_counts(model, tok, task, problems, n, temperature, max_new_tokens, batch_size, generator,
                   top_k=0, top_p=1.0, strict=True):
    """How many of n responses to each problem earn reward 1: a list of ints, one per problem.
    generator: a torch.Generator, or a list with one per problem (see rollout.generate)."""
    stops, counts = data.stop_ids(tok), []
    for i in range(0, len(problems), batch_size):
        chunk = problems[i:i + batch_size]
        prompts = [data.encode_prompt(tok, task, p) for p in chunk]
        g = generator[i:i + batch_size] if isinstance(generator, list) else generator  # one per problem, or shared
        ro = generate(model, prompts, n, max_new_tokens, temperature, top_k, top_p, stops, g)
        texts = completions(ro, tok)
        for j, p in enumerate(chunk):
            counts.append(sum(reward.score(task, t, p["answer"], strict) for t in texts[j * n:(j + 1) * n]))
    return [int(c) for c in counts]


def evaluate(model, tok, task, problems, n=1, ks=(1,), greedy=True, temperature=1.0, max_new_tokens=16,
             batch_size=256, generator=None, top_k=0, top_p=1.0, strict=True):
    """{"pass@k": ..., "greedy_pass@1": ...}: sampled pass@k (for k <= n) averaged over the problems."""
    was_training = model.training
    model.eval()
    kw = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, generator=generator, strict=strict)
    counts = correct_counts(model, tok, task, problems, n, temperature, top_k=top_k, top_p=top_p, **kw)
    out = {f"pass@{k}": sum(pass_at_k(n, c, k) for c in counts) / len(counts) for k in ks if k <= n}
    if greedy:
        out["greedy_pass@1"] = sum(correct_counts(model, tok, task, problems, 1, 0.0, **kw)) / len(problems)
    model.train(was_training)
    return out


# -----------------------------------------------------------------------------
init_from = "assets/tiny-arith"  # HF-format model directory (or hub id) to evaluate
task = "arith"  # arith | gsm8k | math | math_full (see train.py)
data_path = ""  # local directory or .jsonl/.parquet file instead of the hub dataset
splits = "train,test"  # comma-separated splits to evaluate
n_samples = 8  # responses sampled per problem (pass@k needs k <= n_samples)
temperature = 1.0  # sampling temperature of the sampled metrics
max_new_tokens = 8  # response length limit
eval_batch_size = 128  # prompts per sampler call
seed = 0  # sampler seed
device = "auto"  # auto (cuda if there is a GPU, else cpu) | cpu | cuda
dtype = "float32"  # float32 | bfloat16 (autocast; with flash-attn on a GPU, FlashAttention decoding)
strict = True  # GSM8K: score only "#### <number>" (False: the last number)
out = ""  # JSON output path; default: <init_from>/eval.json, or ./eval.json for a hub id
# -----------------------------------------------------------------------------

if __name__ == "__main__":
    from transformers import AutoTokenizer

    import distributed
    from model import Transformer, resolve
    keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))]
    globals().update(configure({k: globals()[k] for k in keys}, sys.argv[1:]))
    torch.manual_seed(seed)
    device = distributed.setup(device)
    path = resolve(init_from)
    model = Transformer.from_pretrained(path, device=device)
    tok = AutoTokenizer.from_pretrained(path)
    gen = torch.Generator().manual_seed(seed)
    ks = [k for k in (1, 2, 4, 8) if k <= n_samples]
    results = {"init_from": init_from, "task": task, "n_samples": n_samples, "temperature": temperature}
    if dtype not in ("float32", "bfloat16"):
        die(f"dtype must be float32 or bfloat16, not {dtype!r}")
    for split in splits.split(","):
        problems = data.load_split(task, split, data_path)
        with torch.autocast(device.split(":")[0], torch.bfloat16, enabled=dtype == "bfloat16"):
            r = evaluate(model, tok, task, problems, n_samples, ks, True, temperature, max_new_tokens,
                         eval_batch_size, gen, strict=strict)
        results[split] = r
        print(f"{split:>5}: " + "  ".join(f"{k} {v:.4f}" for k, v in r.items()))
    out = out or os.path.join(init_from if os.path.isdir(init_from) else ".", "eval.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {out}")
