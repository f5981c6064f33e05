"""What a run shows and keeps: samples.jsonl, the console, the bandit's diagnostics, wandb (issue: see what the
policy learns)."""
import json
import os

import pytest
import torch

import data
import train
from test_design import fresh_state, policy, scripted_rewards, set_config  # noqa: F401 (fixture)
from test_train import run

FIELDS = {"step", "split", "index", "sample", "prompt", "response", "answer", "finished", "reward_nanorft",
          "reward_paper"}


def read(path):
    return [json.loads(line) for line in open(path)]


def test_samples_have_their_fields_and_resume_writes_no_duplicates(tmp_path):
    flags = ["--log_samples=3", "--log_rollouts=2", "--eval_interval=2"]
    run(tmp_path / "a", *flags, "--max_steps=4")
    straight = read(tmp_path / "a" / "samples.jsonl")
    run(tmp_path / "b", *flags, "--max_steps=2")
    with open(tmp_path / "b" / "samples.jsonl", "a") as f:  # a line of step 3, as if killed after it was written
        f.write(json.dumps(dict(straight[-1], step=3)) + "\n")
    run(tmp_path / "b", *flags, "--max_steps=4", "--init_from=resume")
    assert read(tmp_path / "b" / "samples.jsonl") == straight
    assert all(set(s) == FIELDS for s in straight)
    # per evaluation: the first 3 problems of each split, then 2 training rollouts per step
    at = lambda step, split: [s["index"] for s in straight if s["step"] == step and s["split"] == split]
    assert at(0, "train") == at(0, "test") == at(2, "test") == [0, 1, 2] and at(0, "rollout") == []
    assert len(at(1, "rollout")) == len(at(2, "rollout")) == 2 and at(1, "train") == []
    s = straight[0]
    assert s["reward_nanorft"] == float(s["response"].strip() == s["answer"])  # arith: the answer, nothing else


def test_coverage_and_regret_by_hand(policy, monkeypatch):  # noqa: F811
    model, tok, problems = policy
    set_config(batch_size=4, rollouts=2)
    scripted_rewards(monkeypatch, 2)  # prompt g: both responses right for even g, the first only for odd g
    state = fresh_state()
    train.sample_step(model, None, tok, problems, 0, state)
    assert state["regret"] == 2  # 8 responses, 6 right
    assert state["solved"] == sorted(data.batch_indices(len(problems), 4, 0, 0))  # every prompt solved once
    scripted_rewards(monkeypatch, 2)
    monkeypatch.setattr(train.reward, "score", lambda *a, **k: 0.0)  # nothing right in the second draw
    train.sample_step(model, None, tok, problems, 1, state)
    assert state["regret"] == 2 + 8 and len(state["solved"]) == 4  # regret grows, coverage doesn't


def test_coverage_and_regret_in_the_log(tmp_path):
    log = run(tmp_path, "--rollouts=2", "--advantage=grpo", "--max_steps=3", "--eval_interval=3")
    for a, b in zip(log[1:], log[2:]):
        assert b["regret"] - a["regret"] == round(8 * (1 - b["train_acc"]))  # 4 prompts x 2: sampled - right
        assert b["coverage"] >= a["coverage"]
    assert log[1]["coverage"] * 2000 <= 4 and log[0]["coverage"] == 0 and log[0]["regret"] == 0


def test_console_shows_the_changed_config_and_a_line_every_log_interval(tmp_path, capsys):
    run(tmp_path, "--max_steps=4", "--log_interval=2", "--eval_interval=4", "--temperature=0.9")
    out = capsys.readouterr().out
    config = next(line for line in out.splitlines() if line.startswith("config:"))
    assert "temperature=0.9" in config and "learning_rate" not in config  # only what differs from the defaults
    steps = [line.split(" | ")[0] for line in out.splitlines() if line.startswith("step ") and " | " in line]
    assert steps == ["step 2", "step 4"]
    evals = [line.split(" eval: ")[0] for line in out.splitlines() if " eval: " in line]
    assert evals == ["step 0", "step 4"]  # the starting point is shown, not only written to log.jsonl
    assert f"out_dir: {tmp_path}" in out and "done: test pass@1" in out


def test_eval_samples_adds_pass_at_k_and_the_solved_distribution(tmp_path):
    log = run(tmp_path, "--eval_samples=4", "--max_steps=1", "--eval_interval=1")
    last = log[-1]
    for split in ("train", "test"):
        assert last[f"{split}_pass@1"] <= last[f"{split}_pass@2"] <= last[f"{split}_pass@4"]
        assert last[f"{split}_solved_all"] <= last[f"{split}_pass@1"] <= 1 - last[f"{split}_solved_none"]
        assert last[f"{split}_pass@4"] == pytest.approx(1 - last[f"{split}_solved_none"])  # pass@n: any of n right


def test_a_small_training_subset_is_evaluated_on_its_own(tmp_path):
    log = run(tmp_path, "--train_problems=1", "--batch_size=1", "--max_steps=2", "--eval_interval=2")
    assert "trained_pass@1" in log[0] and "trained_greedy" not in log[0]
    assert 16 * log[-1]["trained_pass@1"] == round(16 * log[-1]["trained_pass@1"])  # 16 samples of one problem
    assert log[-1]["coverage"] in (0.0, 1.0)  # of the one trained problem


def test_wandb_offline_run_leaves_its_files(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(tmp_path, "--wandb_log=True", "--wandb_project=nanorft-test")
    runs = [d for d in os.listdir(tmp_path / "wandb") if d.startswith("offline-run-")]
    assert len(runs) == 1 and any(f.endswith(".wandb") for f in os.listdir(tmp_path / "wandb" / runs[0]))
    state = torch.load(tmp_path / "ckpt" / "train_state.pt", weights_only=True)
    assert runs[0].endswith(state["wandb_id"])  # a resume continues the same wandb run
