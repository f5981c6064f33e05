# The paper's "extra sampling" baseline: 1 trained rollout per prompt, 7 more sampled only to
# estimate the prompt's reward mean/std for the advantage; 32 prompts.
batch_size = 32
rollouts = 1
extra_rollouts = 7
advantage = "extra"
