# The paper's extra-sampling experiment ("onerpo"): 32 prompts x 1 trained rollout, plus 7 more responses
# per prompt sampled from the same policy and used only for the group mean and std (over all 1 + 7), eps 1e-6.
# Paper script: run_onerpo_0032_1_7_qwen0.5b_gsm.sh (verl.trainer.main_ppo_bandit, extra_sampling_size=7), e.g.
#   python train.py config/paper/qwen2.5-0.5b_gsm8k.py config/extra_sampling.py
batch_size = 32
rollouts = 1
extra_rollouts = 7
advantage = "extra"
