# The paper's replay experiment ("asyttgrpo"): 512 prompts x 1 rollout per step; each prompt keeps a FIFO
# of its last 8 rewards across steps and epochs (this step's appended first), and the advantage is the
# z-score against it (mean 0, std 1 while it holds one reward). The paper ran it for up to 1000 epochs
# (total_epochs=1000).
# Paper script: run_asyttgrpo_0512_1_8_qwen0.5b_gsm.sh (verl.trainer.main_ppo_replay, window_size=8).
# Its no-replay twin (sweep.py replay): ../minimal.py --batch_size=512.
batch_size = 512
rollouts = 1
advantage = "replay"
replay_window = 8
