# The paper's rollouts experiment: 32 prompts x 32 rollouts per step, GRPO advantage.
# Paper script: run_grpo_0032_32_qwen0.5b_gsm.sh.
batch_size = 32
rollouts = 32
advantage = "grpo"
