# NOT a paper run: 32 prompts x 8 rollouts trained on the RAW reward (no advantage). The paper trains every
# n > 1 on GRPO's z-score (grpo_8rollouts.py); this is the no-advantage baseline of nanoRFT's advantage
# pipeline (sweep.py advantage), which compares estimators on the same 32 x 8 responses.
batch_size = 32
rollouts = 8
advantage = "none"
