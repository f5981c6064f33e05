# The paper's every-run settings (docs/PAPER.md "Every run"), as its scripts set them: github.com/tt725/
# Bandit-Reinforcement-Fine-tuning, Running-Bash/run_*.sh on verl 0.7-dev (its defaults where a script is silent).
# Included by the six model configs beside it ({model}_{task}.py); a design-choice config (a grid point here
# or a file of config/) goes after those.
# The grid point sets batch_size, rollouts and advantage; until it does, this is the minimalist baseline
# 32 x 1 (verl's GRPO at n = 1 is the raw reward: advantage = "none").
# trainer: one rollout phase, then ONE optimizer step over the whole batch (ppo_mini_batch_size =
# train_batch_size, ppo_epochs 1), so the PPO ratio is 1 and its clip (verl's 0.2, both sides) never binds
ppo_epochs = 1
minibatches = 1
clip_low = 0.2
clip_high = 0.2
ratio_level = "token"
policy_loss = "ppo"
loss_agg = "token_mean"  # verl's loss_agg_mode default
entropy_coef = 0.0  # entropy_coeff=0
# KL loss to the frozen initial policy: use_kl_loss=True, kl_loss_coef=0.001, kl_loss_type=low_var_kl (k3, which
# verl clamps to [-10, 10] per token); in the loss, not the reward (use_kl_in_reward=False)
kl_coef = 0.001
kl_estimator = "k3"
kl_clamp = 10.0
kl_in_reward = False
# optimizer: verl's AdamW (betas 0.9, 0.999), lr=1e-6 constant without warmup, weight decay 0.01, grad clip 1.0
learning_rate = 1e-6
lr_schedule = "constant"
weight_decay = 0.01
grad_clip = 1.0
# advantage: verl's GRPO estimator (norm_adv_by_std_in_grpo=True: z-score, unbiased std, eps 1e-6)
adv_eps = 1e-6
# lengths and sampling: prompts up to 512 tokens (longer ones dropped), responses up to 1024; vLLM at T = 1
max_prompt_tokens = 512
max_new_tokens = 1024
temperature = 1.0
top_k = 0
top_p = 1.0
# reward: the paper's graders (GSM8K: strict "#### n" in the last 300 characters; MATH: Hendrycks is_equiv)
grader = "paper"
# evaluation: at step 0, every 100 steps (test_freq=100) and at the end, one sample per problem at T = 1, on the
# whole train and test splits
eval_interval = 100
eval_problems = 0
# length: the scripts set total_epochs=100 with no step cap and were stopped by hand; 500 steps is ~2 epochs of
# GSM8K at 32 prompts. Raise it with --max_steps.
max_steps = 500
# nanoRFT on one GPU (memory and speed, not the paper's math): bf16 autocast, as verl's FSDP actor computes
dtype = "bfloat16"
eval_batch_size = 0  # prompts per evaluation sampler call: as many as fit in the GPU's memory (checks.py)
micro_batch_size = 8  # sequences per forward/backward: bounds GPU memory, not the batch the update sees
