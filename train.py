"""
Reinforcement fine-tuning with verifiable rewards, as batched contextual bandit learning.

    python train.py                                   # built-in arithmetic task, minimalist baseline, CPU
    python train.py config/grpo_8rollouts.py --learning_rate=3e-5

One step: prompts -> rollouts -> rewards -> advantages -> clipped policy-gradient update.
Every design choice below is a global with a one-line comment; config files and --key=value set them.
"""
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext

import torch

import advantage as adv_lib
import distributed as ddp
import data
import reward
from configurator import configure, die
from evaluate import evaluate
from model import Transformer, resolve, token_logprobs
from rollout import cat, completions, generate, pad_left, prompt_generators

# -----------------------------------------------------------------------------
# run
out_dir = "out/arith"  # log.jsonl and checkpoints go here
init_from = "assets/tiny-arith"  # base policy: HF-format directory or hub id; "resume": continue out_dir
seed = 0  # seeds data order, sampling and everything else
device = "auto"  # auto (cuda if there is a GPU, else cpu) | cpu | cuda | cuda:N
dtype = "float32"  # float32 | bfloat16 (autocast, GPU)
num_threads = 1  # torch CPU threads; 1 is steadier on small shared machines
max_steps = 600  # training steps
eval_interval = 50  # evaluate every this many steps (and at step 0 and the end)
eval_problems = 0  # problems per split at evaluation; 0 = the whole split (as the paper)
eval_batch_size = 256  # prompts per sampler call at evaluation
# task
task = "arith"  # arith | gsm8k | math (train MATH-lighteval, test MATH-500) | math_full (test all 5000)
data_path = ""  # local directory or .jsonl/.parquet file instead of the hub dataset (same columns)
max_prompt_tokens = 512  # longer prompts are dropped from the splits (with a count), as verl does
strict = True  # strict answer format in the reward (GSM8K "#### n"); False = lenient extraction
grader = "nanorft"  # nanorft | paper: which grader gives the training reward (pass@1 is logged under both)
train_problems = 0  # train on a fixed, seeded subset of this many training problems; 0 = all (eval: whole splits)
max_new_tokens = 8  # response length limit
# rollouts
batch_size = 32  # prompts per step
rollouts = 1  # responses per prompt that are trained on
extra_rollouts = 0  # responses per prompt used only for the baseline (advantage="extra")
temperature = 1.0  # sampling temperature (the policy the loss sees is scaled the same way)
top_k = 0  # 0 = off
top_p = 1.0  # 1.0 = off
sample_batch_size = 0  # prompts per sampler call, bounding KV-cache memory; 0 = all of a step's prompts at once
# advantage
advantage = "none"  # none | grpo | dr_grpo | rloo | batch | extra | replay (see advantage.py)
adv_eps = 1e-6  # added to std in normalizing estimators
replay_window = 8  # rewards kept per prompt by advantage="replay"
filter_zero_variance = False  # DAPO dynamic sampling: drop prompts whose rewards are all equal
resample_tries = 0  # with the filter: extra prompt batches sampled to refill the step (DAPO)
mask_truncated = False  # responses cut at max_new_tokens get no gradient (DAPO overlong filtering)
# loss
loss_agg = "token_mean"  # token_mean | seq_mean_token_mean (GRPO) | seq_sum_norm (Dr. GRPO)
ppo_epochs = 1  # passes over each rollout batch
minibatches = 1  # optimizer steps per pass
micro_batch_size = 0  # sequences per forward/backward (bounds memory); 0 = the whole minibatch
grad_checkpointing = False  # recompute each block's activations in backward: less memory, ~30% more compute
clip_low = 0.2  # PPO ratio clip below: 1 - clip_low
clip_high = 0.2  # PPO ratio clip above: 1 + clip_high (DAPO clip-higher: 0.28)
ratio_level = "token"  # token | sequence (GSPO: one length-normalized ratio per response, clipped per sequence)
policy_loss = "ppo"  # ppo (clipped surrogate) | cispo (clipped importance weight, detached, times -adv * logp)
dual_clip = 0.0  # dual-clip PPO constant c > 1 bounding the loss of negative advantages; 0 = off
kl_coef = 0.0  # weight of KL to the frozen initial policy; 0 = no reference model at all
kl_estimator = "k3"  # k1 | k2 | k3 (Schulman's estimators)
kl_clamp = 0.0  # clamp each token's KL estimate to [-kl_clamp, kl_clamp] (verl's low_var_kl: 10); 0 = off
kl_in_reward = False  # True: subtract kl_coef * sequence KL from the reward instead of adding it to the loss
entropy_coef = 0.0  # entropy bonus weight (entropy is logged either way)
# optimizer
learning_rate = 1e-4  # AdamW peak learning rate
lr_schedule = "constant"  # constant | cosine (linear warmup, cosine decay to min_lr_ratio)
warmup_steps = 0  # linear warmup steps of the cosine schedule
min_lr_ratio = 0.1  # final lr / peak lr of the cosine schedule
weight_decay = 0.0  # AdamW weight decay
grad_clip = 1.0  # max global grad norm; 0 = off
overwrite = False  # a fresh run may replace the run already in out_dir (else it stops with an error)
max_bad_steps = 3  # stop after this many steps in a row with a non-finite loss or gradient (each is skipped)
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))]


def check_config(c):
    """Impossible combinations end the run before it starts; misleading ones warn."""
    choices = dict(advantage=adv_lib.ESTIMATORS, loss_agg=("token_mean", "seq_mean_token_mean", "seq_sum_norm"),
                   kl_estimator=("k1", "k2", "k3"), lr_schedule=("constant", "cosine"),
                   dtype=("float32", "bfloat16"))
    for k, allowed in choices.items():
        if c[k] not in allowed:
            die(f"{k}={c[k]!r} is not one of {', '.join(allowed)}")
    for k in ("batch_size", "rollouts", "ppo_epochs", "minibatches", "max_new_tokens"):
        if c[k] < 1:
            die(f"{k} must be at least 1, got {c[k]}")
    if c["advantage"] == "rloo" and c["rollouts"] < 2:
        die("advantage=rloo needs rollouts >= 2 (its baseline is the mean of the *other* rollouts)")
    if c["advantage"] == "extra" and c["extra_rollouts"] < 1:
        die("advantage=extra needs extra_rollouts >= 1")
    if c["advantage"] != "extra" and c["extra_rollouts"]:
        die(f"extra_rollouts={c['extra_rollouts']} is only used by advantage=extra")
    if c["batch_size"] < ddp.world or c["batch_size"] % ddp.world:
        die(f"batch_size={c['batch_size']} must be a multiple of the world size {ddp.world}")
    per_rank = c["batch_size"] // ddp.world * c["rollouts"]
    if per_rank % c["minibatches"]:
        die(f"minibatches={c['minibatches']} must divide the responses trained per rank ({per_rank})")
    if c["advantage"] in ("grpo", "dr_grpo") and c["rollouts"] == 1:
        print(f"warning: advantage={c['advantage']} with rollouts=1 has no group: it is the same as 'none'",
              file=sys.stderr)
    if c["resample_tries"] and not c["filter_zero_variance"]:
        die("resample_tries needs filter_zero_variance=True")


def lr_at(step):
    if lr_schedule == "constant":
        return learning_rate
    if step < warmup_steps:  # linear warmup then cosine decay (GPT-3 / nanoGPT)
        return learning_rate * (step + 1) / warmup_steps
    frac = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return learning_rate * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def kl_penalty(logp, ref_logp):
    """Per-token estimate of KL(policy || reference) from sampled tokens (Schulman 2020, "Approximating KL")."""
    log_ratio = logp - ref_logp
    if kl_estimator == "k1":  # unbiased, can be negative
        return log_ratio
    if kl_estimator == "k2":  # biased, low variance: 0.5 * log(p/q)^2
        return 0.5 * log_ratio ** 2
    return torch.exp(-log_ratio) - 1 + log_ratio  # k3: unbiased and >= 0 (GRPO)


def aggregate(x, mask, n_tokens, n_seqs):
    """Per-token values x (N, T) over response tokens -> one scalar, normalized as loss_agg says.
    n_tokens, n_seqs are the totals of the whole minibatch, so micro-batch pieces add up to it."""
    x = x * mask
    if loss_agg == "token_mean":  # every token weighs the same (DAPO; TRL "dapo"/"bnpo")
        return x.sum() / n_tokens
    if loss_agg == "seq_mean_token_mean":  # every sequence weighs the same (original GRPO)
        return (x.sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs
    return x.sum() / (n_seqs * max_new_tokens)  # seq_sum_norm: constant normalizer, no length bias (Dr. GRPO)


def policy_loss(logp, old_logp, adv, mask, n_tokens, n_seqs):
    """PPO's clipped surrogate (Schulman et al. 2017) with clip-higher and dual-clip; (loss, stats).
    With one epoch and one minibatch the ratio is 1 and this is the plain policy gradient -adv * logp."""
    ratio = torch.exp(logp - old_logp)  # (N, T)
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1 - clip_low, 1 + clip_high)
    pg = torch.maximum(pg1, pg2)
    if dual_clip > 0:  # dual-clip PPO (Ye et al. 2020): bound the loss of negative advantages at -c * adv
        pg = torch.where(adv < 0, torch.minimum(pg, -dual_clip * adv), pg)
    m = mask.float()
    stats = dict(ratio=(ratio * m).sum().item(), clipfrac=((pg2 > pg1).float() * m).sum().item())
    return aggregate(pg, m, n_tokens, n_seqs), stats


def sample_step(policy, ref, tok, problems, draw, replay):
    """Rollouts of one prompt batch, with rewards and advantages. Each rank samples its share of the prompts
    (a prompt's whole group stays on one rank); rewards are gathered so the advantage sees the global batch.
    Returns (rows, metrics): rows holds this rank's trained responses, per-sequence tensors."""
    ids = data.batch_indices(len(problems), batch_size, seed, draw)  # global (B,)
    b = batch_size // ddp.world
    lo, hi = ddp.rank * b, (ddp.rank + 1) * b
    n = rollouts + extra_rollouts
    prompts = [data.encode_prompt(tok, task, problems[i]) for i in ids[lo:hi]]
    gens, c = prompt_generators(seed, 0, draw, range(lo, hi)), sample_batch_size or b
    with autocast():
        ro = cat([generate(policy, prompts[i:i + c], n, max_new_tokens, temperature, top_k, top_p,
                           data.stop_ids(tok), gens[i:i + c]) for i in range(0, b, c)])
    texts = completions(ro, tok)
    correct = torch.tensor([reward.score(task, t, problems[ids[lo + j // n]]["answer"], strict)
                            for j, t in enumerate(texts)]).view(b, n)
    r = correct.clone()
    if kl_coef > 0 and kl_in_reward:  # the KL penalty as part of the reward (InstructGPT / PPO-RLHF style)
        with torch.no_grad(), autocast():
            ref_lp, _ = token_logprobs(ref, ro.tokens, ro.valid, temperature)
        r = r - kl_coef * (kl_penalty(ro.logprobs, ref_lp) * ro.mask).sum(1).view(b, n)
    correct, r = ddp.gather_rows(correct), ddp.gather_rows(r)  # (B, n) on every rank
    a = adv_lib.compute(r, advantage, rollouts, ids, replay, replay_window, adv_eps)  # (B, rollouts)
    zero_var = (correct == correct[:, :1]).all(1)  # (B,) every response of the prompt scored the same
    trained = torch.zeros(batch_size, n, dtype=torch.bool)
    trained[:, :rollouts] = True
    if filter_zero_variance:
        trained &= ~zero_var[:, None]
    keep = trained[lo:hi].flatten()
    rows = dict(tokens=ro.tokens[keep], mask=ro.mask[keep], old_logp=ro.logprobs[keep], valid=ro.valid[keep],
                adv=a[lo:hi][trained[lo:hi, :rollouts]], finished=ro.finished[keep])
    lengths = ro.mask.sum(1).float()
    metrics = dict(reward=r[:, :rollouts].mean().item(), train_acc=correct[:, :rollouts].mean().item(),
                   zero_var_frac=zero_var.float().mean().item(),
                   response_len=ddp.all_sum(lengths.mean().item()) / ddp.world,
                   tokens=int(ddp.all_sum(lengths.sum().item())))
    return rows, metrics


def select_rows(parts):
    """This rank's share of the first batch_size*rollouts trained responses over one or more draws, and in
    "order" each row's index in a single process's batch; (N, T) tensors are left-padded to one width."""
    budget, taken, picked = batch_size * rollouts, 0, []
    for p in parts:
        counts = ddp.gather_ints(p["tokens"].size(0))  # rows kept by each rank in this draw
        before = taken + sum(counts[:ddp.rank])
        k = max(0, min(counts[ddp.rank], budget - before))
        picked.append(dict({name: v[:k] for name, v in p.items()}, order=torch.arange(before, before + k)))
        taken += sum(counts)
    width = max(p["tokens"].size(1) for p in picked)
    return {k: torch.cat([pad_left(p[k], width) for p in picked]) for k in picked[0]}


def update(model, ref, opt, rows):
    """ppo_epochs passes of `minibatches` AdamW steps over the rollout rows; returns averaged stats.
    model: the policy, DDP-wrapped under torchrun. Minibatch k takes the rows at k, k+M, k+2M, ... of a single
    process's batch (rows["order"]), so every rank's k-th minibatch is its share of the single-process one;
    loss normalizers are global totals."""
    policy = getattr(model, "module", model)
    N, order = rows["tokens"].size(0), rows["order"]
    # plus one all-padding row (index N): a rank holding fewer rows of a minibatch runs it to keep in step
    rows = {k: torch.nn.functional.pad(v, (0, 0) * (v.dim() - 1) + (0, 1)) for k, v in rows.items() if k != "order"}
    real = torch.arange(N + 1) < N
    mask = rows["mask"] & real[:, None] & (rows["finished"][:, None] if mask_truncated else True)
    totals = dict(loss=0.0, grad_norm=0.0, kl=0.0, entropy=0.0, ratio=0.0, clipfrac=0.0)
    n_opt, bad = 0, 0
    n_mb = min(minibatches, int(ddp.all_sum(N)))
    mbs = [(order % n_mb == k).nonzero().squeeze(1) for k in range(n_mb)]  # this rank's rows of minibatch k
    mbs = [torch.cat((mb, torch.full((ddp.all_max(len(mb)) - len(mb),), N))) for mb in mbs]  # same length on all ranks
    for _ in range(ppo_epochs):
        for mb in mbs:
            n_tokens = max(ddp.all_sum(mask[mb].sum().item()), 1.0)
            n_seqs = max(ddp.all_sum(real[mb].sum().item()), 1.0)
            micro = mb.split(micro_batch_size or len(mb))
            for i, mi in enumerate(micro):
                m = mask[mi].float()
                with autocast():
                    logp, ent = token_logprobs(model, rows["tokens"][mi], rows["valid"][mi], temperature,
                                               entropy_grad=entropy_coef > 0)
                a = rows["adv"][mi][:, None].expand_as(logp)  # (n, T): one advantage for all tokens of a response
                loss, st = policy_loss(logp, rows["old_logp"][mi], a, m, n_tokens, n_seqs)
                if entropy_coef > 0:
                    loss = loss - entropy_coef * aggregate(ent, m, n_tokens, n_seqs)
                if kl_coef > 0:
                    with torch.no_grad(), autocast():
                        ref_lp, _ = token_logprobs(ref, rows["tokens"][mi], rows["valid"][mi], temperature)
                    kl = aggregate(kl_penalty(logp, ref_lp), m, n_tokens, n_seqs)
                    totals["kl"] += kl.item()
                    if not kl_in_reward:
                        loss = loss + kl_coef * kl
                # DDP averages gradients over ranks; our loss pieces are parts of one global sum, so undo the mean.
                # All but the last micro-batch skip DDP's all-reduce (no_sync), which then reduces the sum.
                sync = nullcontext() if i == len(micro) - 1 or ddp.world == 1 else model.no_sync()
                with sync:
                    (loss * ddp.world).backward()
                totals["loss"] += loss.item()
                totals["entropy"] += ((ent * m).sum() / n_tokens).item()
                totals["ratio"] += st["ratio"] / n_tokens
                totals["clipfrac"] += st["clipfrac"] / n_tokens
            norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), grad_clip if grad_clip > 0 else float("inf"))
            if torch.isfinite(norm):
                opt.step()
                totals["grad_norm"] += norm.item()
            else:  # a NaN/inf loss or gradient: skip this optimizer step rather than poison the weights
                bad += 1
            opt.zero_grad(set_to_none=True)
            n_opt += 1
    stats = {k: ddp.all_sum(v) / n_opt for k, v in totals.items() if k != "grad_norm"}
    return dict(stats, grad_norm=totals["grad_norm"] / max(1, n_opt - bad), skipped=bad)


def autocast():
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16) if dtype == "bfloat16" \
        else nullcontext()


def run_eval(policy, tok, splits, step):
    """Sampled (T=temperature) and greedy pass@1 of each split, sharded over ranks: problem i on rank i % world."""
    out = {}
    for kind, (name, problems) in enumerate(splits.items(), start=1):
        mine = range(ddp.rank, len(problems), ddp.world)
        r = evaluate(policy, tok, task, [problems[i] for i in mine], 1, (1,), True, temperature, max_new_tokens,
                     eval_batch_size, prompt_generators(seed, kind, step, mine), top_k, top_p, strict)
        out[f"{name}_pass@1"] = ddp.all_sum(r["pass@1"] * len(mine)) / len(problems)
        out[f"{name}_greedy"] = ddp.all_sum(r["greedy_pass@1"] * len(mine)) / len(problems)
    return out


def save_checkpoint(policy, tok, opt, state):
    """out_dir/ckpt: the policy as a Hugging Face directory, plus train_state.pt with all a resume needs.
    Written to ckpt.tmp and swapped in by renames, so a crash mid-write leaves the last good checkpoint."""
    path, tmp, old = (os.path.join(out_dir, d) for d in ("ckpt", "ckpt.tmp", "ckpt.old"))
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    torch.save(dict(state, optimizer=opt.state_dict()), os.path.join(tmp, "train_state.pt"))
    if os.path.exists(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint():
    """(model path, train state) of out_dir's last good checkpoint, for init_from="resume"."""
    for d in ("ckpt", "ckpt.old"):  # ckpt.old survives only a crash between the two renames
        path = os.path.join(out_dir, d)
        if os.path.exists(os.path.join(path, "train_state.pt")):
            return path, torch.load(os.path.join(path, "train_state.pt"), weights_only=True)
    die(f"init_from=resume but {out_dir} holds no checkpoint")


def main():
    global device
    from tqdm import tqdm
    from transformers import AutoTokenizer
    device = ddp.setup(device)
    check_config(globals())
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    if init_from == "resume":
        path, state = load_checkpoint()
    else:  # step, prompt batches drawn, responses sampled, seconds, replay windows {prompt id: rewards}
        path = resolve(init_from)
        state = dict(step=0, draws=0, responses=0, elapsed=0.0, base=path, replay={})
    policy = Transformer.from_pretrained(path, device=device)
    policy.grad_checkpointing = grad_checkpointing
    tok = AutoTokenizer.from_pretrained(path)
    ref = Transformer.from_pretrained(state["base"], device=device).eval().requires_grad_(False) \
        if kl_coef > 0 else None  # the frozen *initial* policy, also when resuming
    model = ddp.wrap(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=learning_rate, weight_decay=weight_decay)
    train_set, test_set = (data.fit_prompts(tok, task, data.load_split(task, s, data_path), s, max_prompt_tokens,
                                            verbose=ddp.rank == 0) for s in ("train", "test"))
    eval_sets = dict(train=train_set[:eval_problems or None], test=test_set[:eval_problems or None])
    main_rank = ddp.rank == 0  # only rank 0 logs and checkpoints
    os.makedirs(out_dir, exist_ok=True)
    log_path = os.path.join(out_dir, "log.jsonl")
    if init_from == "resume":
        opt.load_state_dict(state["optimizer"])
        with open(log_path) as f:  # drop lines logged after the checkpoint: those steps are redone
            kept = [line for line in f if json.loads(line)["step"] <= state["step"]]
    else:
        kept = [json.dumps(dict(step=0, time=0.0, responses=0, **run_eval(policy, tok, eval_sets, 0))) + "\n"]
    log = open(log_path, "w") if main_rank else None
    if main_rank:
        log.writelines(kept)
    t_start = time.time() - state["elapsed"]
    first = line = json.loads(kept[0])
    bar = tqdm(range(state["step"] + 1, max_steps + 1), desc="train", dynamic_ncols=True, disable=not main_rank)
    bad_steps = 0
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1)
        t0 = time.time()
        parts, metrics = [], None
        for _ in range(1 + resample_tries):  # DAPO dynamic sampling draws again while the batch is short
            rows, m = sample_step(policy, ref, tok, train_set, state["draws"], state["replay"])
            state["draws"] += 1
            parts.append(rows)
            metrics = metrics or m  # the step's metrics describe its first draw: the policy's real batch
            if ddp.all_sum(sum(p["tokens"].size(0) for p in parts)) >= batch_size * rollouts:
                break
        rows = select_rows(parts)
        state["responses"] += len(parts) * batch_size * (rollouts + extra_rollouts)
        t1 = time.time()
        trained = int(ddp.all_sum(rows["tokens"].size(0)))
        stats = update(model, ref, opt, rows) if trained else {}
        t2 = time.time()
        bad_steps = bad_steps + 1 if stats.get("skipped") else 0
        if stats.get("skipped") and main_rank:
            print(f"warning: step {step}: non-finite loss or gradient, skipped {stats['skipped']} optimizer "
                  f"step(s)", file=sys.stderr)
        if bad_steps >= max_bad_steps:
            die(f"{bad_steps} steps in a row had a non-finite loss or gradient; stopping (try a lower "
                f"learning_rate; the last good checkpoint is in {out_dir}/ckpt)")
        line = dict(step=step, time=round(t2 - t_start, 3), responses=state["responses"], lr=lr_at(step - 1),
                    **metrics, **stats, trained=trained, sample_s=round(t1 - t0, 4), update_s=round(t2 - t1, 4),
                    tokens_per_s=round(metrics["tokens"] / max(t1 - t0, 1e-9), 1))
        if device.startswith("cuda"):  # the step's peak, for sizing micro_batch_size and sample_batch_size
            line["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
            torch.cuda.reset_peak_memory_stats(device)
        if step % eval_interval == 0 or step == max_steps:  # evaluate, then checkpoint below
            line.update(run_eval(policy, tok, eval_sets, step))
            bar.set_postfix(test=f"{line['test_pass@1']:.3f}", train=f"{line['train_pass@1']:.3f}")
            state.update(step=step, elapsed=time.time() - t_start)
        if main_rank:  # logged before the checkpoint, so a checkpoint's own step is never missing from the log
            log.write(json.dumps(line) + "\n")
            log.flush()
            if state["step"] == step:
                save_checkpoint(policy, tok, opt, state)
    if main_rank:
        log.close()
        print(f"done: test pass@1 {first['test_pass@1']:.3f} -> {line['test_pass@1']:.3f} "
              f"(greedy {first['test_greedy']:.3f} -> {line['test_greedy']:.3f}) in {time.time() - t_start:.0f}s; "
              f"checkpoint in {os.path.join(out_dir, 'ckpt')}")
    ddp.teardown()


if __name__ == "__main__":
    globals().update(configure({k: globals()[k] for k in config_keys}, sys.argv[1:]))
    main()
