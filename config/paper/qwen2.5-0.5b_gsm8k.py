# The paper's setup: Qwen2.5-0.5B-Instruct on GSM8K (openai/gsm8k main): train 7473 / test 1319 problems.
# The every-run settings (KL 0.001, lr 1e-6, one update per step, 512/1024 tokens, the paper's grader, eval
# every 100 steps on both whole splits) are in paper.py. Compose a design choice after this file (a grid point
# here or a file of config/), e.g.:
#   python train.py config/paper/qwen2.5-0.5b_gsm8k.py config/grpo_8rollouts.py
include("paper.py")
init_from = "Qwen/Qwen2.5-0.5B-Instruct"
task = "gsm8k"
grad_checkpointing = True  # memory estimate 18.3 GiB, not 60.3 (--help): fits a 24 GB GPU
