# The sibling paper's bottom layer (arXiv 2601.14599, the multi-armed bandit view): ONE training problem, one
# rollout per step, the raw reward as the signal; a bandit whose arms are all possible responses. Evaluation
# still covers the whole train and test splits. Not among the batched paper's shipped scripts; sweep.py
# one_problem adds the layers (rollouts, advantage, problems, batch) one at a time.
train_problems = 1
batch_size = 1
rollouts = 1
advantage = "none"
