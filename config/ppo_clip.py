# PPO-style reuse of each rollout batch (Schulman et al. 2017): 2 epochs x 4 minibatches, so later
# minibatches are off-policy and the ratio clip (0.2) is active; GRPO advantage, 8 rollouts x 32.
batch_size = 32
rollouts = 8
advantage = "grpo"
ppo_epochs = 2
minibatches = 4
