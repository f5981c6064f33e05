"""
RFT with verifiable rewards as batched contextual bandit learning (arXiv 2601.22532): a prompt is a context, a
sampled response an action, its outcome reward the bandit's reward. main() tells one step as a story: prompts ->
rollouts -> rewards -> advantages -> loss -> optimizer step -> evaluation, log, checkpoint. Every design choice is a
global below with a one-line comment. Left out on purpose: a critic (GAE), reward models, vLLM, FSDP (README).

    python train.py                                   # built-in arithmetic task, minimalist baseline, CPU
    python train.py config/grpo_8rollouts.py --learning_rate=3e-5
    python train.py --help                            # every knob, its default and what it does
"""
from machinery.cli import die, quiet_interrupt

quiet_interrupt(__name__)  # first: a Ctrl-C while torch imports (seconds) ends with one line, not a traceback

import math
import os
import sys
import time
from collections import defaultdict

import torch

import data
import reward
from advantage import compute_advantages
from configurator import configure
from evaluate import evaluate_splits
from loss import aggregate, is_weights, kl_penalty, policy_gradient
from model import Transformer, load_tokenizer, resolve
from rollout import cat, completions, generate, prompt_generators
from machinery import checkpoint, precision, stale, distributed as ddp
from machinery.checks import check_config, check_run, memory_help
from machinery.report import Reporter, bad_step, config_lines, console_line, eval_line, rollout_examples

# -----------------------------------------------------------------------------
# run
out_dir = ""  # log.jsonl, samples.jsonl and ckpt/ go here; "" = out/<config names and overrides> (out/arith)
init_from = "assets/tiny-arith"  # base policy: HF-format directory or hub id; "resume": continue out_dir
overwrite = False  # a fresh run may replace the run already in out_dir (else it stops with an error)
seed = 0  # seeds data order, sampling and everything else
device = "auto"  # auto (cuda if there is a GPU, else cpu) | cpu | cuda | cuda:N
dtype = "float32"  # float32 | bfloat16 | float16 (autocast; float16 with a dynamic loss scale: precision.py)
sampler_dtype = ""  # the sampler's, if not dtype ("" = dtype): makes the sampler/trainer gap on purpose
num_threads = 1  # torch CPU threads; 1 is steadier on small shared machines
ddp_timeout = 600  # seconds a rank waits for the others (torchrun) before it stops the run; nccl's default
max_steps = 600  # training steps
eval_interval = 50  # evaluate every this many steps (and at step 0 and the end)
eval_problems = 0  # problems per split at evaluation; 0 = the whole split (as the paper)
eval_batch_size = 256  # prompts per sampler call at evaluation; 0 = as many as fit in memory (checks.py)
eval_samples = 1  # responses per problem at evaluation (the paper: 1); > 1 adds pass@k, always/never-solved
# task
task = "arith"  # arith | gsm8k | math (train MATH-lighteval, test MATH-500) | math_full (test all 5000)
data_path = ""  # local directory or .jsonl/.parquet file instead of the hub dataset (same columns)
max_prompt_tokens = 512  # longer prompts are dropped from the splits (with a count), as verl does
strict = True  # strict answer format in the reward (GSM8K "#### n"); False = lenient extraction
grader = "nanorft"  # nanorft | paper: which grader gives the training reward (pass@1 is logged under both)
train_problems = 0  # train on a fixed, seeded subset of this many problems; 0 = all (eval: whole splits)
max_new_tokens = 8  # response length limit
# rollouts
batch_size = 32  # prompts per step
rollouts = 1  # responses per prompt that are trained on
extra_rollouts = 0  # responses per prompt used only for the baseline (advantage="extra")
temperature = 1.0  # sampling temperature (the policy the loss sees is scaled the same way)
top_k = 0  # 0 = off
top_p = 1.0  # 1.0 = off
truncated_logprobs = False  # log-probs of the top-k/top-p distribution sampled from, not the full one (TRL)
sample_batch_size = 0  # prompts per sampler call, bounding KV-cache memory; 0 = all of a step's prompts
compile = False  # compile the sampler's decode step (torch.compile; CUDA graphs on a GPU): docs/speed.md
staleness = 0  # steps the sampler lags behind, as in async pipelines (machinery/stale.py); 0 = on-policy
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
ratio_level = "token"  # token | sequence (GSPO: one length-normalized ratio per response, clipped as one)
policy_loss = "ppo"  # ppo (clipped surrogate) | cispo (clipped importance weight, detached, times -adv*logp)
dual_clip = 0.0  # dual-clip PPO constant c > 1 bounding the loss of negative advantages; 0 = off
clip_to = "pi_old"  # PPO's ratio pi / pi_old (verl, TRL) | sampler: pi / pi_sampler (coupled PPO, no recompute)
kl_coef = 0.0  # weight of KL to the frozen initial policy; 0 = no reference model at all
kl_estimator = "k3"  # k1 | k2 | k3 (Schulman's estimators)
kl_clamp = 0.0  # clamp each token's KL estimate to [-kl_clamp, kl_clamp] (verl's low_var_kl: 10); 0 = off
kl_in_reward = False  # True: subtract kl_coef * sequence KL from the reward instead of adding it to the loss
entropy_coef = 0.0  # entropy bonus weight (entropy is logged either way)
is_correction = "none"  # none (the paper) | tis | mis | m2po: correct the sampler's gap (loss.is_weights)
is_cap = 2.0  # C: tis caps each token's weight at C; mis drops responses whose mean ratio is outside [1/C, C]
m2_threshold = 0.04  # m2po: the kept tokens' mean (log pi_old/pi_sampler)^2 stays below it (M2PO's mask)
# optimizer
learning_rate = 1e-4  # AdamW peak learning rate
lr_schedule = "constant"  # constant | cosine (linear warmup, cosine decay to min_lr_ratio)
warmup_steps = 0  # linear warmup steps of the cosine schedule
min_lr_ratio = 0.1  # final lr / peak lr of the cosine schedule
weight_decay = 0.0  # AdamW weight decay
grad_clip = 1.0  # max global grad norm; 0 = off
max_bad_steps = 3  # stop after this many steps in a row with a non-finite loss or gradient (each is skipped)
# logging
log_interval = 10  # print a short line every this many steps
log_samples = 32  # problems per split whose responses go to samples.jsonl at each evaluation
log_rollouts = 0  # training responses per step also written to samples.jsonl
wandb_log = False  # also log to Weights & Biases (pip install wandb; WANDB_MODE=offline needs no network)
wandb_project = "nanorft"  # wandb project
wandb_run_name = ""  # wandb run name; "" = the out_dir's name
# -----------------------------------------------------------------------------
config_keys = [k for k, v in globals().items() if not k.startswith("_") and not k.isupper()
               and isinstance(v, (int, float, bool, str))]


def main():
    # -- setup: checks first (nothing expensive before them), then the policy, the data and the run's state
    global device, eval_batch_size
    device = ddp.setup(device, ddp_timeout)
    config = {k: globals()[k] for k in config_keys}
    check_config(config, ddp.world)
    resume, main_rank = init_from == "resume", ddp.rank == 0
    checkpoint.prepare_out_dir(out_dir, resume, overwrite, clear=False)  # replaced only after the checks
    if resume:
        path, state = checkpoint.load(out_dir)
        checkpoint.check_resume(state["config"], config)
    else:  # step, prompt batches drawn, responses, seconds, base model, replay windows, bandit counters
        path = resolve(checkpoint.start_from(init_from, out_dir))  # (a run's out_dir: its checkpoint)
        state = dict(step=0, draws=0, responses=0, elapsed=0.0, base=path, replay={}, solved=[], regret=0)
    tok = load_tokenizer(path)
    problems, eval_sets, longest = data.task_sets(tok, task, data_path, max_prompt_tokens, train_problems,
                                                  eval_problems, seed, verbose=main_rank)
    eval_batch_size = check_run(path, tok, config, ddp.world, device, longest, problems, eval_sets)
    torch.manual_seed(seed)
    torch.set_num_threads(num_threads)
    policy = Transformer.from_pretrained(path, device=device)
    policy.grad_checkpointing = grad_checkpointing
    ref = precision.frozen_reference(state["base"], dtype, device) if kl_coef > 0 else None  # the initial policy
    model = ddp.wrap(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=learning_rate, weight_decay=weight_decay, fused="cuda" in device)
    scaler = precision.grad_scaler(device, dtype, state.get("scaler"))  # float16's loss scale (else disabled)
    if resume:
        checkpoint.load_optimizer(opt, state["optimizer"], path)  # checked against the model first
    state["config"] = config
    if overwrite and not resume and main_rank:
        checkpoint.clear_run(out_dir)
    report = Reporter(out_dir, state["step"] if resume else None, config, state, main_rank)  # (and wandb's)
    report.say(config_lines(config, DEFAULTS, out_dir))
    if not resume:
        evals, samples = run_eval(policy, tok, eval_sets, 0)
        line = dict(step=0, time=0.0, responses=0, coverage=0.0, regret=0, **evals)
        report.say(eval_line(line))  # the starting point every later evaluation is read against
        report.write(line, samples)
    from tqdm import tqdm
    t_start, bad_steps = time.time() - state["elapsed"], 0
    for step in tqdm(range(state["step"] + 1, max_steps + 1), desc="train", dynamic_ncols=True,
                     disable=not main_rank):
        opt.param_groups[0]["lr"] = lr_at(step - 1)  # its one group: the policy's parameters
        t0, draws = time.time(), []  # draws: each one's (rows, metrics, examples)
        # -- 1-4. prompts -> rollouts -> rewards -> advantages; DAPO's filter may leave it short: draw again
        with stale.behaviour(policy, state, staleness):  # the policy of `staleness` steps ago samples
            for _ in range(1 + resample_tries):
                draws.append(sample_step(policy, ref, tok, problems, state["draws"], state))
                state["draws"] += 1
                if ddp.all_sum(sum(d[0]["tokens"].size(0) for d in draws)) >= batch_size * rollouts:
                    break
        (_, metrics, shown), rows = draws[0], ddp.select_rows([d[0] for d in draws], batch_size * rollouts)
        state["responses"] += len(draws) * batch_size * (rollouts + extra_rollouts)
        t1 = time.time()
        # -- 5-6. loss -> optimizer step
        trained = int(ddp.all_sum(rows["tokens"].size(0)))
        stats = update(model, ref, opt, rows, scaler) if trained else {}
        t2 = time.time()
        bad_steps = bad_steps + 1 if stats.get("skipped") else 0  # a non-finite loss or gradient skips a step
        bad_step(step, stats, rows, bad_steps, max_bad_steps, main_rank)  # max_bad_steps in a row stop
        # -- 7. log; every eval_interval steps: evaluate, then checkpoint
        tokens = metrics.pop("tokens")
        line = dict(step=step, time=round(t2 - t_start, 3), responses=state["responses"], lr=lr_at(step - 1),
                    **metrics, coverage=len(state["solved"]) / len(problems), regret=state["regret"], **stats,
                    trained=trained, sample_s=round(t1 - t0, 4), update_s=round(t2 - t1, 4),
                    tokens_per_s=round(tokens / max(t1 - t0, 1e-9), 1), **ddp.peak_memory(device))
        samples = [dict(split="rollout", **s) for s in shown]
        if step % log_interval == 0:
            report.say(console_line(line))
        if step % eval_interval == 0 or step == max_steps:
            evals, eval_shown = run_eval(policy, tok, eval_sets, step)
            line.update(evals)
            samples += eval_shown
            state.update(step=step, elapsed=time.time() - t_start)
            report.say(eval_line(line))
        report.write(line, samples)  # before the checkpoint: a checkpoint's own step is always in the log
        if main_rank and state["step"] == step:
            checkpoint.save(out_dir, policy, tok, opt, dict(state, scaler=scaler.state_dict()))
    report.say(report.summary(time.time() - t_start, os.path.join(out_dir, "ckpt")))
    report.close()
    ddp.teardown()


def sample_step(policy, ref, tok, problems, draw, state):
    """One draw of a step's data: prompts -> rollouts -> rewards -> advantages, each rank its share of the
    prompts. Updates the replay windows and bandit counters in `state`. Returns (rows: this rank's trained
    responses as (N, ...) tensors, metrics, examples: the first log_rollouts responses of all ranks)."""
    # prompts: batch_size problems, a pure function of (seed, draw), so a resumed run sees the same ones
    ids = data.batch_indices(len(problems), batch_size, seed, draw)  # (B,) over the whole batch
    mine, n = ddp.share(batch_size), rollouts + extra_rollouts  # this rank's prompts, each with its group
    prompts = [data.encode_prompt(tok, task, problems[ids[i]]) for i in mine]

    # rollouts: n responses per prompt (by an older policy with staleness), each prompt with its own seeds
    generators, chunk = prompt_generators(seed, 0, draw, mine), sample_batch_size or len(mine)
    with precision.autocast(device, sampler_dtype or dtype):
        rollout = cat([generate(policy, prompts[i:i + chunk], n, max_new_tokens=max_new_tokens, compile=compile,
                                temperature=temperature, top_k=top_k, top_p=top_p, eos_id=data.stop_ids(tok),
                                generator=generators[i:i + chunk], truncated_logprobs=truncated_logprobs)
                     for i in range(0, len(mine), chunk)])
    texts = completions(rollout, tok)  # (len(mine) * n,), prompt-major

    # rewards: 1.0 for a right answer under each grader; the configured one is the learning signal
    answers = [problems[ids[i]]["answer"] for i in mine for _ in range(n)]
    correct = {g: ddp.gather_rows(torch.tensor([reward.score(task, text, answer, strict, grader=g)
                                                for text, answer in zip(texts, answers)]).view(-1, n))
               for g in reward.GRADERS}  # {grader: (B, n)} on every rank
    rewards = correct[grader].clone()
    if kl_coef > 0 and kl_in_reward:  # the KL penalty as part of the reward (InstructGPT / PPO-RLHF style)
        with torch.no_grad(), precision.autocast(device, dtype):
            ref_logprobs, _ = ref(rollout.tokens, rollout.valid, rollout.mask, temperature=temperature,
                                  nucleus=(top_k, top_p) if truncated_logprobs else (0, 1.0))
        kl = kl_penalty(rollout.logprobs, ref_logprobs, kl_estimator, kl_clamp)
        rewards -= kl_coef * ddp.gather_rows(torch.where(rollout.mask, kl, 0.0).sum(1).cpu().view(-1, n))

    # advantages: what each response's tokens are pushed by; "none" is the raw reward (advantage.py)
    advantages = compute_advantages(rewards, advantage, rollouts, ids, state["replay"], replay_window,
                                    adv_eps)  # (B, rollouts)

    # trained on: each prompt's first `rollouts` responses (the rest fed only the baseline), DAPO-filtered
    zero_var = (correct[grader] == correct[grader][:, :1]).all(1)  # (B,)
    trained = (torch.arange(n) < rollouts).repeat(len(mine), 1)  # (per_rank, n): this rank's
    if filter_zero_variance:
        trained &= ~zero_var[mine.start:mine.stop, None]
    keep = trained.flatten()
    rows = dict(tokens=rollout.tokens[keep], mask=rollout.mask[keep], old_logprobs=rollout.logprobs[keep],
                valid=rollout.valid[keep], finished=rollout.finished[keep],  # advantages: moved with them
                advantages=advantages[mine.start:mine.stop][trained[:, :rollouts]].to(rollout.tokens.device))

    # the bandit's view: prompts solved at least once so far (coverage), responses sampled but wrong (regret)
    # EXERCISE coverage_regret: add the ids of this draw's prompts with a right response to state["solved"] (a
    # sorted list), its wrong responses to state["regret"] (tests: tests/test_exercises.py -k coverage_and_regret)
    solved = set(state["solved"]) | {ids[i] for i in correct[grader].any(1).nonzero().flatten().tolist()}
    state["solved"] = sorted(solved)
    state["regret"] += int(correct[grader].numel() - correct[grader].sum().item())
    # END EXERCISE
    lengths = rollout.mask.sum(1).float()
    acc = {g: c[:, :rollouts].mean().item() for g, c in correct.items()}  # of the trained responses
    metrics = dict(reward=rewards[:, :rollouts].mean().item(), train_acc=acc[grader],
                   **{f"train_acc_{g}": a for g, a in acc.items() if g != grader},
                   response_len=ddp.all_sum(lengths.mean().item()) / ddp.world,
                   tokens=int(ddp.all_sum(lengths.sum().item())))
    if n > 1:  # a group of one always "agrees with itself": no information
        metrics["zero_var_frac"] = zero_var.float().mean().item()
    return rows, metrics, rollout_examples(problems, ids, mine, n, texts, answers, rollout.finished, correct,
                                           log_rollouts)  # every rank's, in a single process's order


def update(model, ref, opt, rows, scaler=None):
    """ppo_epochs passes of `minibatches` AdamW steps over the rollout rows; returns the stats averaged over
    optimizer steps. model: the policy (DDP-wrapped under torchrun); scaler: float16's loss scale."""
    policy, scaler = getattr(model, "module", model), scaler or precision.grad_scaler(device, dtype)
    trained = rows["mask"] & (rows["finished"][:, None] if mask_truncated else True)  # (N, T) tokens trained
    rows, plan = ddp.minibatches(dict(rows, mask=trained), minibatches, micro_batch_size)  # (+ DDP's padding)
    on_policy = ppo_epochs == 1 and minibatches == 1 and is_correction != "m2po"  # m2po: pi_old first
    nucleus = (top_k, top_p) if truncated_logprobs else (0, 1.0)  # scored: the sampler's truncated softmax
    # pi_old (N, T): the trainer's log-probs before any step; one step per batch: its own forward (as verl)
    pi_old = torch.zeros_like(rows["old_logprobs"]) if on_policy else \
        precision.trainer_logprobs(policy, rows, rows["mask"], micro_batch_size, temperature, nucleus,
                                   lambda: precision.autocast(device, dtype))
    cap = stale.global_m2po_cutoff(pi_old, rows, m2_threshold) if is_correction == "m2po" else is_cap
    totals, n_steps, skipped, bad = defaultdict(float), 0, 0, 0  # on the device: no host wait per backward
    for _ in range(ppo_epochs):
        for micro, n_tokens, n_seqs in plan:  # a minibatch's micro-batches; its loss normalizers, all ranks
            for i, (ids, cols) in enumerate(micro):
                tokens, valid, mask = (rows[k][ids][:, cols] for k in ("tokens", "valid", "mask"))  # (n, t)
                old_logprobs = rows["old_logprobs"][ids][:, cols]  # the sampler's
                # the loss: the policy's log-probs of the sampled tokens; REINFORCE, or PPO... off-policy
                with precision.autocast(device, dtype):
                    logprobs, entropy = model(tokens, valid, mask, temperature=temperature,
                                              entropy_grad=entropy_coef > 0, nucleus=nucleus)  # (n, t)
                advantages = rows["advantages"][ids, None].expand_as(logprobs)  # on all its tokens
                if on_policy:
                    pi_old[ids, cols] = logprobs.detach()
                # PPO's ratio to pi_old (None: to pi itself, REINFORCE) or to the sampler; the gap's correction
                base = old_logprobs if clip_to == "sampler" else None if on_policy else pi_old[ids][:, cols]
                weights = is_weights(pi_old[ids][:, cols], old_logprobs, mask, kind=is_correction, cap=cap)
                pg, st = policy_gradient(logprobs, base, advantages, mask, kind=policy_loss, ratio_level=ratio_level,
                                         clip_low=clip_low, clip_high=clip_high, dual_clip=dual_clip)
                loss = aggregate(weights * pg, mask, loss_agg, n_tokens, n_seqs, max_new_tokens)
                if entropy_coef > 0:  # entropy bonus (A3C): keeps the policy from collapsing early
                    bonus = aggregate(entropy, mask, loss_agg, n_tokens, n_seqs, max_new_tokens)
                    loss = loss - entropy_coef * bonus
                if kl_coef > 0:  # KL to the frozen initial policy (GRPO; the paper: k3, 0.001, clamped to 10)
                    with torch.no_grad(), precision.autocast(device, dtype):
                        ref_logprobs, _ = ref(tokens, valid, mask, temperature=temperature, nucleus=nucleus)
                    kl = aggregate(kl_penalty(logprobs, ref_logprobs, kl_estimator, kl_clamp), mask, loss_agg,
                                   n_tokens, n_seqs, max_new_tokens)
                    totals["kl"] += kl.detach()
                    if not kl_in_reward:
                        loss = loss + kl_coef * kl
                ddp.backward(model, scaler.scale(loss), last=i == len(micro) - 1)
                with torch.no_grad():  # how far the sampler's log-probs are from the policy's: ~1 on-policy
                    totals["ratio"] += torch.where(mask, (logprobs - old_logprobs).exp(), 0.0).sum() / n_tokens
                    totals["entropy"] += torch.where(mask, entropy, 0.0).sum() / n_tokens
                totals["loss"] += loss.detach()
                totals["clipfrac"] += st["clipfrac"] / n_tokens
            # the optimizer step, skipped on a non-finite gradient (float16: only once the scaler gives up)
            norm, stepped, gave_up = precision.optimizer_step(opt, scaler, policy.parameters(), grad_clip)
            totals["grad_norm"] += norm.item() if stepped else 0.0
            opt.zero_grad(set_to_none=True)
            n_steps, skipped, bad = n_steps + 1, skipped + (not stepped), bad + gave_up
    stats = {k: ddp.all_sum(float(v)) / n_steps for k, v in totals.items() if k != "grad_norm"}
    stats.update(precision.gap_stats(pi_old, rows["old_logprobs"], rows["mask"], is_correction, cap))
    if scaler.is_enabled():  # float16: the loss scale and the overflowed steps it skipped
        stats.update(loss_scale=scaler.get_scale(), overflows=skipped - bad)
    return dict(stats, grad_norm=totals["grad_norm"] / max(1, n_steps - skipped), skipped=bad)


def run_eval(policy, tok, eval_sets, step):
    """evaluate.evaluate_splits with this run's sampling settings: (log entries, samples)."""
    with precision.autocast(device, sampler_dtype or dtype):  # evaluation samples as the sampler does
        return evaluate_splits(policy, tok, task, eval_sets, step, seed, n=eval_samples, keep=log_samples,
                               grader=grader, temperature=temperature, max_new_tokens=max_new_tokens,
                               batch_size=eval_batch_size, top_k=top_k, top_p=top_p, strict=strict, compile=compile)


def lr_at(step):
    if lr_schedule == "constant":
        return learning_rate
    if step < warmup_steps:  # linear warmup then cosine decay (GPT-3 / nanoGPT)
        return learning_rate * (step + 1) / warmup_steps
    frac = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return learning_rate * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


DEFAULTS = {k: globals()[k] for k in config_keys}

if __name__ == "__main__":
    globals().update(configure(DEFAULTS, sys.argv[1:], source=__file__, help_more=memory_help))
    out_dir = out_dir or checkpoint.default_out_dir(sys.argv[1:], task)
    try:
        main()
    except KeyboardInterrupt:
        die(f"interrupted; {checkpoint.resume_hint(out_dir)}", code=130)
