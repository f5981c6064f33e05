# sweep.py's default --base: the CPU budget of one run on the built-in arithmetic task, on one core each so
# that --jobs=2 fills a 2-core machine. Measured on 2 cores: minimal.py ~40 s, 256 responses per step
# (grpo_8rollouts.py, budget256_*.py) ~2 min, rollouts_64.py ~25 min (2048 responses per step).
# The design-choice config applied after this one sets the batch, rollouts and advantage.
max_steps = 150  # the minimalist baseline goes from ~27% to ~55% test pass@1 in this many
eval_interval = 25  # 7 points per curve, step 0 included
eval_problems = 500  # the whole 500-problem test split, and the first 500 of the 2000 training problems
num_threads = 1
