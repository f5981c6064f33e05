"""Faults and bad inputs as a careless or unlucky user makes them: config values, files, runs and evaluate.py. Each
bad input ends with exit code 2 and one line `error: ...` on stderr (the last one, at the start of a line), no
traceback, and loses nothing: no run overwritten, no checkpoint damaged; a resume may change only
checkpoint.SAFE_TO_CHANGE. The helpers and the shared run here serve every test_faults*.py: kills and damaged
checkpoints (test_faults_kills.py), every file of a run (test_faults_core.py), inputs that pass the first checks
(test_faults_entry.py), and the third round (test_faults_third.py)."""
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from machinery import checkpoint
from machinery import checks
import evaluate
import model
import train
from configurator import configure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "assets", "tiny-arith")
DEFAULTS = {k: getattr(train, k) for k in train.config_keys}
FAST = ["--max_steps=2", "--eval_interval=2", "--eval_problems=16", "--batch_size=4", f"--init_from={TINY}"]
RUN = FAST + ["--rollouts=2", "--advantage=grpo", "--kl_coef=0.001"]  # the experiment of the shared run below
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def one_error(err):
    """The `error: ...` line of a stderr: the only one, the last line, at the start of its line (a progress bar
    before it ended its line), and no traceback anywhere."""
    assert "Traceback" not in err, err
    # not splitlines: a bar's \r is no line break, unless the bar blanked its line first (tqdm's leave=False
    # writes spaces then \r), so what follows starts at column 0 of a clear line
    lines = [line.rsplit("\r", 1)[1] if "\r" in line and not line.rsplit("\r", 2)[-2].strip() else line
             for line in err.split("\n") if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: ") and errors[0] == lines[-1], err
    return errors[0]


def fails(capsys, fn, *args, **kwargs):
    """fn(*args, **kwargs) ends the program with exit code 2 and one error line; returns the line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(*args, **kwargs)
    assert e.value.code == 2
    return one_error(capsys.readouterr().err)


def train_main(out_dir, *argv):
    """train.py's main() in-process (what `python train.py RUN... --out_dir=out_dir argv...` runs)."""
    train.__dict__.update(configure(DEFAULTS, RUN + [f"--out_dir={out_dir}", *argv]))
    train.main()


def evaluate_main(monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["evaluate.py", *argv])
    evaluate.main()


def log_steps(out_dir):
    return [json.loads(line)["step"] for line in open(os.path.join(out_dir, "log.jsonl"))]


def snapshot(out_dir):
    """{path: digest} of every file under out_dir but the lock (it names whoever ran there last): equal
    snapshots, nothing lost or changed."""
    files = [os.path.join(d, f) for d, _, names in os.walk(out_dir) for f in names if f != checkpoint.LOCK]
    return {os.path.relpath(f, out_dir): hashlib.sha1(open(f, "rb").read()).hexdigest() for f in files}


def ckpt_step(path):
    return torch.load(os.path.join(path, "train_state.pt"), weights_only=True)["step"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One real run (2 steps of RUN, checkpoint at step 2) that tests copy and then damage."""
    out = tmp_path_factory.mktemp("base") / "run"
    train_main(out)
    return out


@pytest.fixture
def run_copy(base_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base_run, out)
    return out


@pytest.fixture
def no_eval(monkeypatch):
    """Bad inputs must be caught before the step-0 evaluation (the first expensive thing)."""
    def evaluated(*a, **k):
        raise AssertionError("the step-0 evaluation ran before the input was checked")
    monkeypatch.setattr(train, "run_eval", evaluated)


# -----------------------------------------------------------------------------
# config values: checks.check_config is pure, so one call per value

INVALID = [("temperature", -1.0), ("temperature", 0.0), ("adv_eps", -1e-6), ("replay_window", 0), ("top_p", 0.0),
           ("top_p", -0.5), ("top_p", 1.01), ("top_k", -1), ("clip_low", -0.1), ("clip_low", 1.01), ("clip_high", -0.1),
           ("dual_clip", 0.5), ("dual_clip", 1.0), ("dual_clip", -3.0), ("grad_clip", -1.0), ("kl_coef", -0.001),
           ("warmup_steps", -1), ("eval_problems", -1), ("max_steps", 0), ("eval_interval", 0), ("learning_rate", 0.0),
           ("learning_rate", -1e-4), ("weight_decay", -0.01), ("micro_batch_size", -1), ("sample_batch_size", -1),
           ("eval_batch_size", -1), ("batch_size", 0), ("num_threads", 0), ("device", "xpu"), ("device", "cuda:"),
           ("device", "cuda:-1"), ("device", "gpu"), ("task", "mnist"), ("task", "GSM8K"),
           ("learning_rate", float("nan")), ("adv_eps", float("nan")), ("grad_clip", float("inf")),
           ("kl_coef", float("nan")), ("temperature", float("inf")), ("data_path", "gsm8k.jsonl")]


@pytest.mark.parametrize("key, value", INVALID, ids=lambda v: str(v))
def test_an_invalid_value_is_one_line_naming_it(key, value, capsys):
    line = fails(capsys, checks.check_config, dict(DEFAULTS, **{key: value}), world=1)
    assert key in line


@pytest.mark.parametrize("key, value", [("temperature", 1e-3), ("top_p", 1.0), ("top_p", 1e-3), ("clip_low", 0.0),
                                        ("clip_low", 1.0), ("clip_high", 0.0), ("dual_clip", 0.0), ("dual_clip", 1.01),
                                        ("grad_clip", 0.0), ("eval_problems", 0), ("micro_batch_size", 0),
                                        ("sample_batch_size", 0), ("warmup_steps", 0), ("max_steps", 1),
                                        ("device", "cpu"), ("device", "auto"), ("task", "gsm8k")], ids=str)
def test_the_edge_of_each_valid_range_is_accepted(key, value, capsys):
    checks.check_config(dict(DEFAULTS, **{key: value}), world=1)
    assert "error" not in capsys.readouterr().err


@pytest.mark.parametrize("max_new_tokens, fits", [(56, True), (57, False)])
def test_max_new_tokens_beyond_the_models_positions(max_new_tokens, fits, capsys):
    """tiny-arith has 64 positions: an 8-token prompt leaves room for 56 response tokens."""
    c = dict(DEFAULTS, max_new_tokens=max_new_tokens)
    if fits:
        checks.check_model(TINY, c, 1, "cpu", longest_prompt=8)
    else:
        assert "max_position_embeddings (64)" in fails(capsys, checks.check_model, TINY, c, 1, "cpu", 8)


def test_a_kv_cache_beyond_memory_is_refused_before_allocating(capsys):
    line = fails(capsys, checks.check_model, TINY, dict(DEFAULTS, eval_batch_size=10 ** 9), 1, "cpu", 8)
    assert "GiB" in line and "eval_batch_size" in line
    # a sampler call never holds more prompts than there are: 8 problems x 1 sample fit, whatever eval_batch_size
    checks.check_model(TINY, dict(DEFAULTS, eval_batch_size=10 ** 9, eval_problems=8), 1, "cpu", 8)
    few = dict(DEFAULTS, eval_batch_size=10 ** 9, eval_problems=8, train_problems=4)  # + 4 problems x 16 samples
    checks.check_model(TINY, few, 1, "cpu", 8)
    line = fails(capsys, checks.check_model, TINY, dict(few, eval_samples=10 ** 9), 1, "cpu", 8)
    assert "GiB" in line


@pytest.mark.slow
def test_the_cli_exits_2_with_one_line_and_creates_nothing(tmp_path):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--temperature=0"], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "temperature" in one_error(p.stderr)
    assert os.listdir(tmp_path) == []  # not even the default out_dir


# -----------------------------------------------------------------------------
# files: data, config, model directory, out_dir

def test_a_non_utf8_config_file(tmp_path, capsys):
    path = tmp_path / "latin1.py"
    path.write_bytes("learning_rate = 1e-4  # caf\xe9\n".encode("latin-1"))
    assert "not UTF-8" in fails(capsys, configure, DEFAULTS, [str(path)])


@pytest.mark.parametrize("name, content, says", [("empty.jsonl", b"", "empty (0 bytes)"),
                                                 ("blank.jsonl", b"\n\n", "no rows"),
                                                 ("latin1.jsonl", '{"question": "caf\xe9", "answer": "#### 1"}\n'
                                                  .encode("latin-1"), "not UTF-8")])
def test_a_bad_data_file(name, content, says, tmp_path, capsys, no_eval):
    path = tmp_path / name
    path.write_bytes(content)
    line = fails(capsys, train_main, tmp_path / "out", "--task=gsm8k", f"--data_path={path}")
    assert str(path) in line and says in line


def damage_model(path, how):
    if how == "no config.json":
        os.remove(path / "config.json")
    elif how == "config.json without sizes":
        (path / "config.json").write_text('{"model_type": "qwen2"}')
    elif how == "truncated safetensors":
        os.truncate(path / "model.safetensors", os.path.getsize(path / "model.safetensors") // 2)
    elif how == "mismatched safetensors":
        cfg = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps(dict(cfg, intermediate_size=2 * cfg["intermediate_size"])))
    elif how == "no tokenizer":
        for f in model.TOKENIZER_FILES:
            if os.path.exists(path / f):
                os.remove(path / f)


@pytest.mark.parametrize("how, says", [("no config.json", "config.json is missing"),
                                       ("config.json without sizes", "not a transformers model config"),
                                       ("truncated safetensors", "truncated"),
                                       ("mismatched safetensors", "different models"),
                                       ("no tokenizer", "no tokenizer files")])
def test_a_bad_model_directory(how, says, tmp_path, capsys, no_eval):
    path = tmp_path / "model"
    shutil.copytree(TINY, path)
    damage_model(path, how)
    line = fails(capsys, train_main, tmp_path / "out", f"--init_from={path}")
    assert str(path) in line and says in line


def test_out_dir_that_is_a_file_or_below_one(tmp_path, capsys, no_eval):
    (tmp_path / "file").write_text("mine")
    assert "is a file" in fails(capsys, train_main, tmp_path / "file")
    assert "cannot write" in fails(capsys, train_main, tmp_path / "file" / "run")
    assert (tmp_path / "file").read_text() == "mine"


def test_out_dir_not_writable(tmp_path, capsys, monkeypatch, no_eval):
    def read_only(path, *a, **k):  # root ignores chmod, so the probe's open fails as it would for a user
        raise PermissionError(errno.EACCES, "Permission denied", path)
    monkeypatch.setattr(checkpoint, "open", read_only, raising=False)
    assert "Permission denied" in fails(capsys, train_main, tmp_path / "ro")


# -----------------------------------------------------------------------------
# runs: a fresh run never overwrites another; a resume never changes the experiment

def test_a_fresh_run_refuses_an_out_dir_holding_a_run(run_copy, capsys):
    before = snapshot(run_copy)
    line = fails(capsys, train_main, run_copy)
    assert "already holds a run" in line and "--init_from=resume" in line and "--overwrite=True" in line
    assert snapshot(run_copy) == before


def test_overwrite_replaces_the_run(run_copy):
    (run_copy / "ckpt.old").mkdir()  # whatever the old run left
    train_main(run_copy, "--overwrite=True", "--rollouts=1", "--advantage=none", "--kl_coef=0.0")
    assert log_steps(run_copy) == [0, 1, 2] and not (run_copy / "ckpt.old").exists()
    log = [json.loads(line) for line in open(run_copy / "log.jsonl")]
    assert "zero_var_frac" not in log[1] and "kl" not in log[1]  # a group of one; no KL computed


def test_overwrite_with_a_bad_model_keeps_the_old_run(run_copy, tmp_path, capsys):
    before = snapshot(run_copy)
    fails(capsys, train_main, run_copy, "--overwrite=True", f"--init_from={tmp_path / 'typo'}")
    assert snapshot(run_copy) == before


CHANGED = [("batch_size", 8), ("rollouts", 4), ("advantage", "rloo"), ("seed", 1), ("learning_rate", 3e-4),
           ("task", "gsm8k"), ("kl_coef", 0.0), ("temperature", 0.7)]


@pytest.mark.parametrize("key, value", CHANGED, ids=str)
def test_resume_refuses_a_changed_experiment(key, value, capsys):
    saved = configure(DEFAULTS, RUN)
    line = fails(capsys, checkpoint.check_resume, saved, dict(saved, **{key: value}))
    assert f"{key}={saved[key]!r} -> {value!r}" in line


def test_resume_accepts_what_is_safe_to_change(capsys):
    saved = dict(DEFAULTS, out_dir="out/a")
    checkpoint.check_resume(saved, dict(saved, init_from="resume", max_steps=9, eval_interval=3, num_threads=2,
                                        device="cuda", eval_batch_size=7, micro_batch_size=2, out_dir="elsewhere"))
    cosine = dict(saved, lr_schedule="cosine")  # a cosine schedule decays over max_steps: changing it changes lr
    assert "max_steps" in fails(capsys, checkpoint.check_resume, cosine, dict(cosine, max_steps=9))


def test_resume_with_a_changed_experiment_changes_nothing_on_disk(run_copy, capsys):
    before = snapshot(run_copy)
    line = fails(capsys, train_main, run_copy, "--init_from=resume", "--batch_size=8", "--seed=3")
    assert "batch_size=4 -> 8" in line and "seed=0 -> 3" in line
    assert snapshot(run_copy) == before


def test_resume_with_safe_changes_goes_on(run_copy):
    train_main(run_copy, "--init_from=resume", "--max_steps=4", "--eval_interval=1", "--device=cpu")
    assert log_steps(run_copy) == [0, 1, 2, 3, 4] and ckpt_step(run_copy / "ckpt") == 4
    log = [json.loads(line) for line in open(run_copy / "log.jsonl")]
    assert "zero_var_frac" in log[3] and "kl" in log[3]  # groups of two; KL computed


def test_resume_into_a_directory_that_does_not_exist(tmp_path, capsys):
    assert "does not exist" in fails(capsys, train_main, tmp_path / "typo", "--init_from=resume")
    assert not (tmp_path / "typo").exists()


def test_default_out_dir_follows_the_command():
    d = checkpoint.default_out_dir
    assert d([], "arith") == os.path.join("out", "arith")
    assert d(["config/grpo_8rollouts.py"], "arith") == os.path.join("out", "grpo_8rollouts")
    for extra in (["--init_from=resume"], ["--max_steps=900"], ["--init_from=resume", "--max_steps=900"],
                  ["--device=cpu", "--eval_interval=5", "--overwrite=True"]):
        assert d(["config/grpo_8rollouts.py"] + extra, "arith") == d(["config/grpo_8rollouts.py"], "arith")
        assert d(extra, "arith") == d([], "arith")
    distinct = [[], ["config/grpo_8rollouts.py"], ["config/rloo.py"], ["--learning_rate=3e-5"], ["--seed=1"],
                ["--init_from=Qwen/Qwen2.5-0.5B-Instruct"], ["config/grpo_8rollouts.py", "--seed=1"],
                ["--data_path=" + "x" * 200 + "a"], ["--data_path=" + "x" * 200 + "b"]]
    names = [d(argv, "arith") for argv in distinct]
    assert len(set(names)) == len(names), names
    assert all(len(os.path.basename(n)) <= 120 for n in names)


# -----------------------------------------------------------------------------
# evaluate.py

@pytest.mark.parametrize("argv, says", [(["--splits=dev"], "splits='dev'"), (["--splits=train,"], "splits="),
                                        (["--n_samples=0"], "n_samples"), (["--n_samples=-2"], "n_samples"),
                                        (["--task=mnist"], "task='mnist'")])
def test_evaluate_bad_arguments(argv, says, monkeypatch, capsys):
    assert says in fails(capsys, evaluate_main, monkeypatch, f"--init_from={TINY}", *argv)


@pytest.mark.parametrize("argv, says", [(["--max_new_tokens=100"], "max_position_embeddings"),
                                        (["--device=xpu"], "device='xpu'"), (["--out=."], "is a directory")])
def test_evaluate_refuses_what_would_fail_or_mislead_before_evaluating(argv, says, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    assert says in fails(capsys, evaluate_main, monkeypatch, f"--init_from={TINY}", "--splits=test", *argv)


def test_evaluate_out_in_a_missing_directory_is_refused_before_evaluating(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    out = tmp_path / "no" / "eval.json"
    assert "does not exist" in fails(capsys, evaluate_main, monkeypatch, f"--init_from={TINY}", f"--out={out}")


def test_evaluate_docstring_example_on_a_run_directory(base_run, tmp_path, monkeypatch):
    """python evaluate.py --init_from=out/arith: a train.py out_dir means its checkpoint."""
    shutil.copytree(base_run, tmp_path / "out" / "arith")
    monkeypatch.chdir(tmp_path)
    evaluate_main(monkeypatch, "--init_from=out/arith", "--n_samples=2", "--splits=test", "--max_new_tokens=4")
    found = [os.path.join(d, f) for d, _, files in os.walk("out") for f in files if f == "eval.json"]
    assert len(found) == 1 and json.load(open(found[0]))["test"]["pass@1"] >= 0


def test_evaluate_a_run_killed_between_renames_and_keep_the_result_out_of_ckpt(run_copy, monkeypatch):
    os.rename(run_copy / "ckpt", run_copy / "ckpt.old")  # ckpt.old is the run's checkpoint
    evaluate_main(monkeypatch, f"--init_from={run_copy}", "--n_samples=1", "--splits=test", "--max_new_tokens=4")
    assert (run_copy / "eval.json").exists()  # beside the log: the next save replaces ckpt and all in it
