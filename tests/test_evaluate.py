"""pass@k against brute force; evaluate() on the real tiny policy."""
import itertools
import random

import pytest
import torch

import data
from evaluate import evaluate, pass_at_k


# (5, 2, 3): exactly k wrong samples, so one k-subset of the 10 misses: 1 - 1/10 (a `<=` for `<` returns 1.0)
@pytest.mark.parametrize("n, c, k", [(8, 0, 1), (8, 3, 1), (8, 3, 2), (8, 3, 4), (8, 6, 4), (5, 5, 2), (6, 1, 6),
                                     (7, 2, 3), (5, 2, 3)])
def test_pass_at_k_equals_brute_force(n, c, k):
    # pass@k = chance that a uniformly random k-subset of the n samples holds a correct one
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_evaluate_on_the_tiny_policy(arith):
    model, tok = arith
    problems = data.load_split("arith", "test")[:64]
    g = torch.Generator().manual_seed(0)
    r = evaluate(model, tok, "arith", problems, n=4, ks=(1, 2, 4), max_new_tokens=6, generators=g, keep=3)
    assert set(r) == {"pass@1", "pass@2", "pass@4", "pass@1_paper", "solved_all", "solved_none", "greedy_pass@1",
                      "samples"}
    assert [(s["index"], s["sample"]) for s in r["samples"]] == [(i, j) for i in range(3) for j in range(4)]
    assert r["solved_all"] <= r["pass@1"] <= 1 - r["solved_none"]
    assert 0 < r["pass@1"] <= r["pass@2"] <= r["pass@4"] <= 1  # pass@k grows with k
    assert 0.1 < r["greedy_pass@1"] < 0.9  # the base policy is partly competent
    # greedy pass@1 checked by hand: decode each greedy answer and compare the integers
    from rollout import completions, generate
    ro = generate(model, [data.encode_prompt(tok, "arith", p) for p in problems], 1, 6, temperature=0.0,
                  eos_id=data.stop_ids(tok))
    right = [t.isdigit() and int(t) == int(p["answer"]) for t, p in zip(completions(ro, tok), problems)]
    assert r["greedy_pass@1"] == sum(right) / len(problems)


def test_arith_splits_are_disjoint_and_seeded():
    train, test = data.load_split("arith", "train"), data.load_split("arith", "test")
    assert len(train) == 2000 and len(test) == 500
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in test}
    assert train == data.load_split("arith", "train")
    p = random.Random(0).choice(train)
    a, b = p["prompt"][:-1].split("+")
    assert len(a) == len(b) == 3 and int(a) + int(b) == int(p["answer"])


def test_batch_indices_shuffle_each_epoch_and_are_reproducible():
    order = [data.batch_indices(10, 4, seed=3, step=s) for s in range(5)]  # 20 draws = 2 epochs
    flat = sum(order, [])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]
    assert order == [data.batch_indices(10, 4, seed=3, step=s) for s in range(5)]
    assert order != [data.batch_indices(10, 4, seed=4, step=s) for s in range(5)]


def test_evaluate_cli_prints_and_writes_json(tmp_path):
    import json
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "eval.json"
    p = subprocess.run([sys.executable, "evaluate.py", "--init_from=assets/tiny-arith", "--n_samples=4",
                        "--eval_problems=40", "--splits=test", f"--out={out}"], cwd=root, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())["test"]
    assert {"pass@1", "pass@2", "pass@4", "pass@1_paper", "greedy_pass@1"} <= set(r) and "pass@4" in p.stdout
    samples = [json.loads(line) for line in open(tmp_path / "eval_samples.jsonl")]
    assert len(samples) == 32 * 4 and {"prompt", "response", "answer", "reward_paper", "finished"} <= set(samples[0])
    assert 0 < r["pass@1"] <= r["pass@2"] <= r["pass@4"] <= 1
    p = subprocess.run([sys.executable, "evaluate.py", "--n_samples=2", "--splits=test", "--dtype=bfloat16",
                        "--eval_problems=40", "--eval_batch_size=0", f"--out={out}"], cwd=root, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert 0 < json.loads(out.read_text())["test"]["greedy_pass@1"] <= 1  # bf16 autocast runs on CPU too; the batch
    # size from memory (eval_batch_size=0)
    p = subprocess.run([sys.executable, "evaluate.py", "--dtype=fp16"], cwd=root, capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].endswith("not 'fp16'")


def test_fit_prompts_drops_long_prompts(arith, capsys):
    _, tok = arith
    problems = data.load_split("arith", "test")[:10]
    assert data.fit_prompts(tok, "arith", problems, "test", 8) == problems  # "ddd+ddd=" is 8 tokens
    with pytest.raises(SystemExit) as e:
        data.fit_prompts(tok, "arith", problems, "test", 7)
    assert e.value.code == 2 and "no test problem fits" in capsys.readouterr().err


def test_progress_is_a_bar_over_the_sampler_calls_on_stderr(arith, capsys):
    """evaluate.py's CLI shows a bar per pass (sampled, greedy) that counts sampler calls: 5 problems in calls
    of 2 prompts are 3 calls (each bar starts at 0/3; how often it redraws depends on the clock, so only its start is
    pinned); stdout keeps only the results. Without progress (train.py's evaluation) no bar."""
    model, tok = arith
    problems = data.load_split("arith", "test")[:5]
    evaluate(model, tok, "arith", problems, n=2, ks=(1, 2), batch_size=2, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "2 samples:   0%" in err and "greedy:   0%" in err and err.count("0/3") == 2
    evaluate(model, tok, "arith", problems, n=2, ks=(1, 2), batch_size=2)
    assert capsys.readouterr() == ("", "")
