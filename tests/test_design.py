"""train.py's design choices in the loop (sampling, filtering, the update) on the tiny policy, and every config
file for one step; the loss functions themselves are in test_loss.py."""
import copy
import glob
import math
import os

import pytest
import torch
import torch.nn.functional as F

import advantage
import train
from configurator import configure
from conftest import U32
from test_fake_cuda import logit_size
from test_train import DEFAULTS, ROOT, run


def set_config(**kw):
    train.__dict__.update(configure(DEFAULTS, [f"--{k}={v}" for k, v in kw.items()]))


def test_lr_schedule():
    set_config(lr_schedule="cosine", learning_rate=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert train.lr_at(0) == pytest.approx(1e-4) and train.lr_at(9) == pytest.approx(1e-3)
    assert train.lr_at(10) == pytest.approx(1e-3) and train.lr_at(60) == pytest.approx(0.55e-3)
    assert train.lr_at(110) == pytest.approx(1e-4)
    set_config(lr_schedule="constant", learning_rate=3e-4)
    assert train.lr_at(0) == train.lr_at(1000) == 3e-4


@pytest.fixture
def policy(arith):
    model, tok = arith
    problems = train.data.load_split("arith", "train")
    return model, tok, problems


def fresh_state():
    return dict(replay={}, solved=[], regret=0)


def scripted_rewards(monkeypatch, n):
    """Reward of response j of prompt g: 1 for every response of even g, alternating for odd g."""
    calls = []

    def score(task, text, answer, strict=True, grader="nanorft"):
        if grader != "nanorft":  # the other grader is only logged
            return 0.0
        c = len(calls)
        calls.append(c)
        g, j = divmod(c, n)
        return 1.0 if g % 2 == 0 else float(j == 0)
    monkeypatch.setattr(train.reward, "score", score)


def test_zero_variance_filter(policy, monkeypatch):
    model, tok, problems = policy
    set_config(batch_size=4, rollouts=2, filter_zero_variance=True)
    scripted_rewards(monkeypatch, 2)
    rows, m, _ = train.sample_step(model, None, tok, problems, 0, fresh_state())
    assert m["zero_var_frac"] == 0.5
    assert rows["tokens"].size(0) == 4  # only prompts 1 and 3 (mixed rewards), 2 responses each
    torch.testing.assert_close(rows["advantages"], advantage.compute_advantages(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "none").flatten())


def test_extra_rollouts_feed_only_the_baseline(policy, monkeypatch):
    model, tok, problems = policy
    set_config(batch_size=3, rollouts=1, extra_rollouts=3, advantage="extra")
    seen = []
    real_generate = train.generate
    monkeypatch.setattr(train, "generate", lambda *a, **k: seen.append(real_generate(*a, **k)) or seen[-1])
    scripted_rewards(monkeypatch, 4)
    rows, _, _ = train.sample_step(model, None, tok, problems, 0, fresh_state())
    ro = seen[0]
    assert ro.tokens.size(0) == 12 and rows["tokens"].size(0) == 3
    assert torch.equal(rows["tokens"], ro.tokens[0::4])  # the first response of each prompt only
    r = torch.tensor([[1.0] * 4, [1.0, 0, 0, 0], [1.0] * 4])
    torch.testing.assert_close(rows["advantages"], advantage.compute_advantages(r, "extra", n_train=1).flatten())


def test_mask_truncated_gives_no_gradient(policy):
    model, tok, problems = policy
    set_config(batch_size=4, max_new_tokens=2, mask_truncated=True)  # 2 tokens can't finish "ddd<eos>"
    rows, _, _ = train.sample_step(model, None, tok, problems, 0, fresh_state())
    assert not rows["finished"].any()
    rows["advantages"] = torch.ones(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    assert train.update(model, None, opt, train.ddp.select_rows([rows], 10 ** 6))["grad_norm"] == 0


def test_update_ratio_is_one_on_the_first_epoch(policy):
    model, tok, problems = policy
    set_config(batch_size=8, rollouts=2, advantage="grpo", ppo_epochs=1)
    rows, _, _ = train.sample_step(model, None, tok, problems, 0, fresh_state())
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    st = train.update(model, None, opt, train.ddp.select_rows([rows], 10 ** 6))
    # rounding noise, bounded absolutely: the ratio is the token mean of exp(logp - logp_sampler), the same
    # fp32 log-prob from the update's packed forward and the sampler's cached decode, each token's within
    # delta = 64 U32 of the logits' size (test_fake_cuda's bound), so |mean - 1| <= e^delta - 1; its sum over
    # the micro-batch's n = N x T entries and the division add (n + 1) U32 of the mean (Higham 2002, 4.2).
    # A log-prob one column off moves it by ~0.3, a 1% temperature slip by ~4e-3
    delta, n = 64 * U32 * logit_size(model), rows["tokens"].numel()
    assert st["ratio"] == pytest.approx(1.0, abs=math.expm1(delta) + (n + 1) * U32) and st["clipfrac"] == 0


def test_replay_state_and_resume_are_exact(tmp_path):
    flags = ["--advantage=replay", "--rollouts=2", "--replay_window=3"]
    straight = run(tmp_path / "a", *flags, "--max_steps=4", "--eval_interval=2")
    run(tmp_path / "b", *flags, "--max_steps=2", "--eval_interval=2")
    half = torch.load(tmp_path / "b" / "ckpt" / "train_state.pt", weights_only=True)
    assert half["step"] == 2 and half["replay"] and all(len(v) <= 3 for v in half["replay"].values())
    resumed = run(tmp_path / "b", *flags, "--max_steps=4", "--eval_interval=2", "--init_from=resume")
    timing = ("time", "sample_s", "update_s", "tokens_per_s")
    clean = lambda log: [{k: v for k, v in line.items() if k not in timing} for line in log]
    assert clean(resumed) == clean(straight)
    a = torch.load(tmp_path / "a" / "ckpt" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "ckpt" / "train_state.pt", weights_only=True)
    assert a["replay"] == b["replay"]
    from safetensors.torch import load_file
    wa, wb = (load_file(tmp_path / d / "ckpt" / "model.safetensors") for d in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


DESIGN_CONFIGS = [p for p in sorted(glob.glob(os.path.join(ROOT, "config", "**", "*.py"), recursive=True))
                  if configure(DEFAULTS, [p])["init_from"] == DEFAULTS["init_from"]]  # model/data configs need their hub model: see test_data.py


@pytest.mark.slow
@pytest.mark.parametrize("cfg", DESIGN_CONFIGS, ids=lambda p: os.path.basename(p))
def test_every_config_runs_one_step(cfg, tmp_path):
    log = run(tmp_path, cfg, "--max_steps=1", "--eval_interval=1", "--eval_problems=8", "--max_new_tokens=6")
    c = configure(DEFAULTS, ["--batch_size=4", cfg])  # as run() applies them
    assert log[-1]["step"] == 1 and math.isfinite(log[-1].get("loss", 0.0))
    assert log[-1]["responses"] >= c["batch_size"] * (c["rollouts"] + c["extra_rollouts"])


def test_sampling_in_chunks_gives_the_same_rollouts(policy):
    model, tok, problems = policy
    got = []
    for chunk in (0, 3):
        set_config(batch_size=8, rollouts=2, advantage="grpo", sample_batch_size=chunk)
        rows, m, _ = train.sample_step(model, None, tok, problems, 5, fresh_state())
        got.append((rows, m))
    (a, ma), (b, mb) = got
    assert ma == mb
    for k in ("tokens", "mask", "valid"):  # equal once each row's padding is stripped
        assert [r[v].tolist() for r, v in zip(a[k], a["valid"])] == [r[v].tolist() for r, v in zip(b[k], b["valid"])]
    torch.testing.assert_close(a["advantages"], b["advantages"])


def test_micro_batches_are_grouped_by_length_and_trimmed_to_their_columns():
    # rows of real length 5, 2, 4, 1, left-padded prompts with right-padded (finished) responses
    valid = torch.tensor([[0, 1, 1, 1, 1, 1, 0],
                          [0, 0, 0, 1, 1, 0, 0],
                          [1, 1, 1, 1, 0, 0, 0],
                          [0, 0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    got = train.ddp.micro_batches(torch.arange(4), valid, 2)
    assert [ids.tolist() for ids, _ in got] == [[3, 1], [2, 0]]  # shortest first, two per micro-batch
    assert [cols for _, cols in got] == [slice(3, 5), slice(0, 6)]  # only the columns their tokens occupy
    assert [ids.tolist() for ids, _ in train.ddp.micro_batches(torch.tensor([2, 4]), F.pad(valid, (0, 0, 0, 1)), 0)] \
        == [[4, 2]]  # the padding row (index 4, no tokens) sorts first; 0 = one micro-batch


@pytest.mark.parametrize("extra", [{}, dict(minibatches=2, ppo_epochs=2)], ids=["on_policy", "ppo"])
def test_micro_batching_changes_only_the_summation_order(policy, extra):
    """The loss normalizers are minibatch totals, so the update's result doesn't depend on how rows are cut
    into micro-batches (length-grouped here) beyond float rounding."""
    model, tok, problems = policy
    set_config(batch_size=8, rollouts=2, advantage="grpo", **extra)
    rows, _, _ = train.sample_step(model, None, tok, problems, 0, fresh_state())
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])
    moves = []
    for size in (0, 1, 3):
        set_config(batch_size=8, rollouts=2, advantage="grpo", micro_batch_size=size, grad_clip=0.0, **extra)
        m = copy.deepcopy(model)
        train.update(m, None, torch.optim.SGD(m.parameters(), lr=0.01), train.ddp.select_rows([rows], 10 ** 6))
        moves.append(flat(m) - flat(model))  # the update's step in weight space
    scale = moves[0].abs().max()
    assert scale > 1e-4
    # a layout moves each token's log-prob by at most delta = 64 U32 of the logits' size (test_fake_cuda's
    # bound), so its term of the gradient (advantage x d logp / dw, whose slope holds the probabilities e^logp)
    # by 2 delta of its size, 4 with PPO's ratio to a pi_old recomputed in that layout (2 delta more); each
    # gradient entry sums n = rows x columns terms of a minibatch in another order, n U32 of their size
    # (Higham 2002, 4.2), the largest move standing for it (conftest.assert_close_sums). Each SGD step also
    # rounds every weight w to float32 (U32 |w|, on both sides). A response missed at a micro-batch's edge
    # moves ~0.2 scale
    steps = train.minibatches * train.ppo_epochs
    n = rows["tokens"].numel() // train.minibatches
    per_step = ((4 if steps > 1 else 2) * 64 * U32 * logit_size(model) + n * U32) * scale
    bound = steps * (per_step + 2 * U32 * flat(model).abs())  # (P,)
    for move in moves[1:]:
        assert ((move - moves[0]).abs() <= bound).all(), ((move - moves[0]).abs() / bound).max()


def import_graph():
    """{module: the repo's modules it imports} for every .py file of the reading path (the root), machinery/ and
    tools/, imports inside functions included; named as imported: train, machinery.checks, tools.plot."""
    import ast
    mods = {os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".")
            for d in ("", "machinery", "tools") for p in glob.glob(os.path.join(ROOT, d, "*.py"))}
    graph = {}
    for m in mods:
        with open(os.path.join(ROOT, m.replace(".", os.sep) + ".py"), encoding="utf-8") as f:
            tree = ast.parse(f.read())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and not n.level:
                names += [n.module] + [f"{n.module}.{a.name}" for a in n.names]
        if m.startswith("tools."):  # the tools import each other by plain name (tools/ is their sys.path[0])
            names += [f"tools.{name}" for name in names]
        graph[m] = {name for name in names if name in mods} - {m}
    return graph


def test_imports_point_one_way():
    """DESIGN.md: the import graph has no circles (e.g. checks -> evaluate -> checks, even through a function's
    own import), so each file can be read after the files it uses."""
    graph, done, path = import_graph(), set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(m):] + [m]))
        if m not in done:
            path.append(m)
            for d in sorted(graph[m]):
                visit(d)
            path.pop()
            done.add(m)
    for m in sorted(graph):
        visit(m)
    assert {"train", "machinery.checks", "evaluate", "model", "tools.sweep"} <= done
    assert "machinery.checks" in graph["evaluate"] and "tools.plot" in graph["tools.sweep"]


def test_the_root_is_the_reading_path_and_nothing_below_the_entry_points_reads_the_cli():
    """The root holds the few files a newcomer reads (machinery and tools one folder away), and configuration is
    read only by the programs a user runs: no model, data or machinery module imports configurator."""
    root = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.py")))
    assert len(root) <= 10, root
    graph = import_graph()
    readers = {m for m, deps in graph.items() if "configurator" in deps}
    assert readers <= {"train", "evaluate"} | {m for m in graph if m.startswith("tools.")}, readers


def test_no_file_is_longer_than_a_sitting():
    """Every .py file of the reading path, machinery/, tools/ and tests/ reads in one sitting: at most 350 lines."""
    files = [os.path.join(ROOT, m.replace(".", os.sep) + ".py") for m in import_graph()]
    files += glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True)
    long = {os.path.relpath(f, ROOT): n for f in files if (n := sum(1 for _ in open(f, encoding="utf-8"))) > 350}
    assert len(files) > 60 and not long, long
