# The paper's setup: OLMo-2-0425-1B-Instruct on GSM8K (openai/gsm8k main): train 7473 / test 1319
# problems. The paper's scripts load unsloth's copy of AllenAI's weights.
# The every-run settings (KL 0.001, lr 1e-6, one update per step, 512/1024 tokens, the paper's grader, eval
# every 100 steps on both whole splits) are in paper.py. Compose a design choice after this file (a grid point
# here or a file of config/), e.g.:
#   python train.py config/paper/olmo2-1b_gsm8k.py config/grpo_8rollouts.py
include("paper.py")
init_from = "allenai/OLMo-2-0425-1B-Instruct"
task = "gsm8k"
grad_checkpointing = True  # memory estimate 39.2 GiB, not 63.8 (--help): 80 GB GPU (40: at its edge)
sample_batch_size = 8  # prompts per sampler call: OLMo-2 has no GQA, so its KV cache is 4x Llama-3.2-1B's
