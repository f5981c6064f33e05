# The paper's setup: OLMo-2-1B-Instruct (0425) on MATH: train MATH-lighteval (7500), test MATH-500.
# AdamW at lr 1e-6, 512 prompt + 1024 response tokens, sampling at temperature 1, evaluated every
# 100 steps on the whole train and test splits. Compose a design-choice config after this one:
#   python train.py config/olmo2-1b_math.py config/grpo_8rollouts.py
init_from = "allenai/OLMo-2-0425-1B-Instruct"
task = "math"
out_dir = "out/olmo2-1b_math"
dtype = "bfloat16"
max_steps = 500
max_prompt_tokens = 512
max_new_tokens = 1024
temperature = 1.0
learning_rate = 1e-6
weight_decay = 0.01
grad_clip = 1.0
eval_interval = 100
eval_problems = 0  # the whole split
eval_batch_size = 64
micro_batch_size = 8  # sequences per forward/backward: bounds GPU memory, not the batch the update sees
grad_checkpointing = True  # forward+backward peak 25 GiB instead of 55 (README, GPU memory): fits a 40 GB GPU
sample_batch_size = 8  # prompts per sampler call: OLMo-2 has no GQA, so its KV cache is 4x Llama-3.2-1B's
