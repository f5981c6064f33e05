# The paper's minimalist baseline: RFT as batched contextual bandit learning. One rollout per prompt,
# 32 prompts per step, the raw outcome reward as the learning signal (REINFORCE); the KL loss comes with
# the model config (paper/paper.py). Also the 1-rollout point of the paper's rollouts grid. Paper script:
# run_grpo_0032_1_qwen0.5b_gsm.sh, whose GRPO at n = 1 is the raw reward (a group of one has mean 0 and
# std 1): advantage = "none". E.g.
#   python train.py config/paper/qwen2.5-0.5b_gsm8k.py config/minimal.py
batch_size = 32
rollouts = 1
advantage = "none"
