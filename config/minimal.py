# The paper's minimalist baseline: RFT as batched contextual bandit learning.
# One rollout per prompt, the raw outcome reward as the learning signal, 32 prompts per step.
batch_size = 32
rollouts = 1
advantage = "none"
