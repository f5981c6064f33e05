# The paper's setup: Llama-3.2-1B-Instruct on MATH: train MATH-lighteval 7500 /
# test MATH-lighteval's 5000 (the paper's parquet files, not MATH-500): task "math_full".
# The every-run settings (KL 0.001, lr 1e-6, one update per step, 512/1024 tokens, the paper's grader, eval
# every 100 steps on both whole splits) are in paper.py. Compose a design choice after this file (a grid point
# here or a file of config/), e.g.:
#   python train.py config/paper/llama3.2-1b_math.py config/grpo_8rollouts.py
include("paper.py")
init_from = "meta-llama/Llama-3.2-1B-Instruct"
task = "math_full"
grad_checkpointing = True  # memory estimate 38.8 GiB, not 97.4 (--help): 80 GB GPU (40 with flash-attn)
