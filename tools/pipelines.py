"""
The experiments sweep.py runs: each pipeline an ordered table {entry name: its config files and overrides}.

  rollouts, budget256, batch, extra, replay   the paper's grids (docs/PAPER.md), each entry a paper script
  one_problem   the sibling paper's layers: 1 problem x 1 rollout (raw reward), + rollouts, + GRPO's
                advantage, + 32 problems, + all problems, + 32 prompts per step (the paper's GRPO run);
                each vs the last
  advantage, loss   nanoRFT's extensions: estimators on the same 32 x 8 responses; loss aggregations, and
                PPO / GSPO / CISPO at 4 updates per step
  precision     the sampler/trainer gap on the minimal baseline: fp32; a bf16 sampler with an fp32 trainer,
                bare, with TIS and with MIS; all-bf16; all-fp16 with a loss scaler
  top_p         the minimal baseline sampling at top_p = 0.8, its log-probs of the full softmax or the
                truncated one
  staleness     the sampler K = 1, 2, 4, 8 steps behind (an asynchronous pipeline's lag), each K against
                K = 0 of its arm: the minimalist baseline and GRPO at 8 rollouts, each bare (REINFORCE on
                stale data), with PPO's clip (4 minibatches), TIS, M2PO and coupled PPO (its clip
                against the sampler); staleness_minimal and staleness_grpo are its two halves.
                tools/plot_staleness.py tables and plots it by K
  all           each distinct setting of the others once

A pipeline's first entry is its baseline, and each entry changes one design choice; plot.py compares each
entry with the baseline, or with the entry REFERENCES pairs it with (replay_64x4 with budget256_64x4: same
batch x rollouts, no replay), seed by seed. An entry's name is its run dirs' name, so it means one setting in
every pipeline and a setting has one name: `all` and the pipelines share their runs in one --out. The names
are those of the published results (assets/results), not always their config's: rollouts_8 is
config/grpo_8rollouts.py.
Config paths are relative to the repo root.
"""
CPU_BASE = "config/sweep_cpu.py"  # sweep.py's default --base: the built-in task on a CPU core per run
MINIMAL = ["config/minimal.py"]  # the minimalist baseline: 32 prompts x 1 rollout, raw reward
GRPO = ["config/grpo_8rollouts.py"]  # the paper's GRPO run: 32 prompts x 8 rollouts
ONE = ["config/one_problem.py"]  # the sibling paper's bottom layer: 1 problem x 1 rollout, raw reward


def paper(name):
    """A grid point of the paper's scripts, in config/paper/."""
    return [f"config/paper/{name}.py"]


PAIRS = [(64, 4), (128, 2), (256, 1), (512, 1), (1024, 1), (2048, 1)]  # the paper's replay points, window 8
PIPELINES = {
    # 32 prompts x n rollouts, GRPO (n = 1: the raw reward, the minimalist baseline)
    "rollouts": {"minimal": MINIMAL, "rollouts_8": GRPO,
                 **{f"rollouts_{n}": paper(f"rollouts_{n}") for n in (16, 32, 64)}},
    # 256 responses per step: from the minimalist 256 prompts x 1 rollout to 1 prompt x 256 rollouts
    "budget256": dict(("rollouts_8", GRPO) if b == 32 else
                      (f"budget256_{b}x{256 // b}", paper(f"budget256_{b}x{256 // b}"))
                      for b in (256, 128, 64, 32, 16, 8, 4, 2, 1)),
    # more prompts at 8 rollouts each
    "batch": {"rollouts_8": GRPO, "batch_64x8": paper("batch_64x8"), "batch_128x8": paper("batch_128x8")},
    # 1 trained rollout + 7 for the baseline only: between the minimal run (1 sampled) and GRPO (8 sampled
    # and trained)
    "extra": {"minimal": MINIMAL, "extra_sampling": ["config/extra_sampling.py"], "rollouts_8": GRPO},
    # each replay point next to the same batch x rollouts without replay (REFERENCES pairs them)
    "replay": {name: cfg for b, n in PAIRS for name, cfg in (
        (f"budget256_{b}x{n}", paper(f"budget256_{b}x{n}")) if b <= 256 else
        (f"minimal_{b}x1", [*MINIMAL, f"--batch_size={b}"]),
        (f"replay_{b}x{n}", paper(f"replay_{b}x{n}")))},
    # the sibling paper's layers, one at a time, each entry its predecessor plus one change (REFERENCES)
    "one_problem": {
        "one_problem": ONE,  # 1 problem, 1 prompt x 1 rollout per step, raw reward
        "one_problem_8rollouts_raw": [*ONE, "--rollouts=8"],  # + rollouts
        "one_problem_8rollouts_grpo": [*ONE, "--rollouts=8", "--advantage=grpo"],  # + advantage
        "32problems_8rollouts_grpo": [*ONE, "--rollouts=8", "--advantage=grpo",
                                      "--train_problems=32"],  # + problems (still 1 per step)
        "all_problems_8rollouts_grpo": [*ONE, "--rollouts=8", "--advantage=grpo",
                                        "--train_problems=0"],  # + all problems
        "rollouts_8": GRPO},  # + batch: 32 prompts per step, the paper's GRPO run
    # nanoRFT's extension, not the paper's: advantage estimators on the same 32 x 8 responses
    "advantage": {"raw_rollouts_8": ["config/raw_rollouts_8.py"], "rollouts_8": GRPO,
                  **{name: [f"config/{name}.py"] for name in ("dr_grpo", "rloo", "reinforce_pp")}},
    # nanoRFT's extension: loss aggregations of GRPO's one update per step, then 4 updates per step
    # (minibatches) with PPO's token ratio, GSPO's sequence ratio and CISPO's clipped weight (REFERENCES:
    # those vs PPO's)
    "loss": {"rollouts_8": GRPO,  # GRPO, token-mean, 1 update per step
             **{agg: [*GRPO, f"--loss_agg={agg}"] for agg in ("seq_mean_token_mean", "seq_sum_norm")},
             "ppo_4minibatches": [*GRPO, "--minibatches=4"],
             "gspo": ["config/gspo.py"], "cispo": ["config/cispo.py"]},
    # nanoRFT's extension: the sampler/trainer gap on the minimalist baseline. A bf16 sampler against an fp32
    # trainer makes the gap on purpose; TIS and MIS correct it (REFERENCES: vs the bare gap)
    "precision": {"fp32": MINIMAL,
                  "bf16_sampler": [*MINIMAL, "--sampler_dtype=bfloat16"],
                  "bf16_sampler_tis": [*MINIMAL, "--sampler_dtype=bfloat16", "--is_correction=tis"],
                  "bf16_sampler_mis": [*MINIMAL, "--sampler_dtype=bfloat16", "--is_correction=mis"],
                  "bf16": [*MINIMAL, "--dtype=bfloat16"],
                  "fp16": [*MINIMAL, "--dtype=float16"]},
    # nanoRFT's extension: nucleus sampling's ratio bias: top_p = 0.8 scored under the full softmax (the
    # default, verl/TRL) and under the truncated one it samples from (REFERENCES: vs the default)
    "top_p": {"minimal": MINIMAL, "top_p80": [*MINIMAL, "--top_p=0.8"],
              "top_p80_truncated": [*MINIMAL, "--top_p=0.8", "--truncated_logprobs=True"]},
}
# nanoRFT's extension: staleness (machinery/stale.py). PPO's clip acts against pi_old, the trainer's policy at
# the step's start, so only from a step's second optimizer step on: its arm takes 4 per step (minibatches), as
# the loss pipeline's ppo_4minibatches; TIS and M2PO weight pi_old against the sampler (K steps old); coupled
# PPO clips the ratio to the sampler itself, from the first optimizer step (clip_to=sampler)
STALE_K = (1, 2, 4, 8)
ARMS = {"minimal": {"minimal": MINIMAL, "minimal_ppo_4minibatches": [*MINIMAL, "--minibatches=4"],
                    "minimal_tis": [*MINIMAL, "--is_correction=tis"],
                    "minimal_m2po": [*MINIMAL, "--is_correction=m2po"],
                    "minimal_coupled": [*MINIMAL, "--clip_to=sampler"]},
        "grpo": {"rollouts_8": GRPO, "ppo_4minibatches": [*GRPO, "--minibatches=4"],
                 "rollouts_8_tis": [*GRPO, "--is_correction=tis"],
                 "rollouts_8_m2po": [*GRPO, "--is_correction=m2po"],
                 "rollouts_8_coupled": [*GRPO, "--clip_to=sampler"]}}
HALVES = [f"staleness_{half}" for half in ARMS]  # the staleness pipeline in two: each one arm's entries
for half, arms in zip(HALVES, ARMS.values()):
    PIPELINES[half] = {f"{arm}_stale{k}" if k else arm: [*cfg, f"--staleness={k}"] if k else cfg
                       for arm, cfg in arms.items() for k in (0, *STALE_K)}
PIPELINES["staleness"] = {name: cfg for half in HALVES for name, cfg in PIPELINES[half].items()}
# every distinct setting once, the minimalist baseline first
PIPELINES["all"] = {"minimal": MINIMAL, **{name: cfg for entries in list(PIPELINES.values())
                                          for name, cfg in entries.items()}}
# entries compared with another entry than their pipeline's baseline (plot.py's paired differences);
# one_problem's layers each with the last
TWINS = {f"replay_{b}x{n}": f"budget256_{b}x{n}" if b <= 256 else f"minimal_{b}x1" for b, n in PAIRS}
REFERENCES = {"replay": {**{twin: twin for twin in TWINS.values()}, **TWINS},  # a twin itself: not compared
              "one_problem": dict(zip(list(PIPELINES["one_problem"])[1:], PIPELINES["one_problem"])),
              "loss": dict(gspo="ppo_4minibatches", cispo="ppo_4minibatches"),
              "precision": dict(bf16_sampler_tis="bf16_sampler", bf16_sampler_mis="bf16_sampler"),
              "top_p": dict(top_p80_truncated="top_p80")}
for name in ("staleness", *HALVES):  # each K with its arm's K = 0, which is not compared with another arm
    REFERENCES[name] = {e: e.rpartition("_stale")[0] or e for e in PIPELINES[name]}
# in `all`, an entry of one pipeline (the halves count as staleness) keeps its reference there; one of several
# (rollouts_8), and a twin, is compared with minimal
OWN = [name for name in PIPELINES if name not in ("all", *HALVES)]
REFERENCES["all"] = {e: r for refs in REFERENCES.values() for e, r in refs.items()
                     if e != r and sum(e in PIPELINES[name] for name in OWN) == 1}
# On the CPU base, the entries sampling more than 256 responses per step run fewer steps, so that a pipeline
# takes tens of minutes on 2 cores (estimates in the README). Steps stay multiples of 25, the base's
# eval_interval, so each entry's last step is also evaluated by the 150-step runs it is compared with; the
# replay points keep ~20 visits per prompt of the 2000 training problems (512 x 75, 1024 x 50, 2048 x 25).
# The precision entries run 100 steps, their fp32 reference too: CPU autocast in bf16/fp16 is ~5-10x
# slower.
CPU_STEPS = {"rollouts_32": 75, "rollouts_64": 75, "batch_128x8": 75, "minimal_512x1": 75, "replay_512x1": 75,
             "minimal_1024x1": 50, "replay_1024x1": 50, "minimal_2048x1": 25, "replay_2048x1": 25,
             **{name: 100 for name in PIPELINES["precision"]}}
