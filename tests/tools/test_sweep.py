"""sweep.py and plot.py on a tiny real sweep: 2 configs x 2 seeds x 2 steps of train.py, run once per module."""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from machinery import checkpoint
import pipelines
import plot
import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIPELINE = "config/minimal.py,config/grpo_8rollouts.py"
TINY = ["--max_steps=2", "--eval_interval=1", "--eval_problems=16", "--batch_size=4"]
GROUPS = ("minimal", "grpo_8rollouts")


def run_sweep(out, pipeline=PIPELINE):
    """sweep.py as a user runs it: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "tools/sweep.py", pipeline, "--seeds=2", f"--out={out}", *TINY], cwd=ROOT,
                       capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """(sweep dir, exit code, stdout) of the tiny sweep; tests that change the dir work on a copy."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    rc, stdout, _ = run_sweep(out)
    return out, rc, stdout


def copy_of(swept, tmp_path):
    return shutil.copytree(swept[0], tmp_path / "s")  # copy2 keeps mtimes


def table_rows(path):
    """{design choice: [cells]} of a results.md table."""
    rows = [line.strip("|\n").split(" | ") for line in open(path) if line.startswith("| ")][1:]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows}


def test_sweep_writes_a_log_per_run_and_the_table(swept):
    out, rc, stdout = swept
    assert rc == 0, stdout
    for g in GROUPS:
        for s in (0, 1):
            d = out / g / f"seed{s}"
            assert [json.loads(line)["step"] for line in open(d / "log.jsonl")] == [0, 1, 2]
            assert (d / "done.json").exists() and (d / "ckpt" / "train_state.pt").exists()
            assert open(d / "train.out").readline().startswith("$ ")  # the command, to rerun it by hand
            assert f"{g} seed{s}: done in" in stdout
    assert stdout.count(": start") == 4
    assert list(table_rows(out / "results.md")) == list(GROUPS)  # pipeline order, the baseline first
    assert json.load(open(out / "pipeline.json")) == dict(pipeline=PIPELINE, entries=list(GROUPS), baseline="minimal",
                                                          references={})
    assert "--overwrite" not in open(out / "minimal" / "seed0" / "train.out").readline()  # a fresh dir


def test_png_when_matplotlib_is_installed(swept):
    pytest.importorskip("matplotlib")
    assert os.path.getsize(swept[0] / "results.png") > 1000


def test_table_numbers_equal_the_logs_by_hand(swept):
    out = swept[0]
    evals = {g: [[line for line in map(json.loads, open(f)) if "test_pass@1" in line]
                 for f in sorted(glob.glob(str(out / g / "seed*" / "log.jsonl")))] for g in GROUPS}
    pm = lambda x, f=".1f", scale=100: f"{scale * np.mean(x):{f}} ± {scale * np.std(x, ddof=1):{f}}"
    rows = table_rows(out / "results.md")
    for g, runs in evals.items():
        final = lambda k, e=runs: [r[-1][k] for r in e]
        best = lambda k: [max(line[k] for line in e) for e in runs]
        gained = [e[-1]["test_pass@1"] - e[0]["test_pass@1"] for e in runs]
        per_point = "n/a" if min(gained) <= 0 else \
            pm([e[-1]["responses"] / (100 * d) for e, d in zip(runs, gained)], ".0f", 1)

        def paired(k):  # seed by seed (both at step 2), t(0.975, 1) = 12.7062 for two seeds
            d = 100 * (np.array(final(k)) - np.array(final(k, evals["minimal"])))
            half = 12.7062 * np.std(d, ddof=1) / np.sqrt(2)
            return f"{d.mean():+.1f} [{d.mean() - half:+.1f}, {d.mean() + half:+.1f}]"
        compared = ["—"] * 3 if g == "minimal" else ["minimal", paired("train_pass@1"), paired("test_pass@1")]
        expected = [g, "2", pm(final("train_pass@1")), pm(best("train_pass@1")), pm(final("test_pass@1")),
                    pm(best("test_pass@1")), *compared, pm(final("time"), ".0f", 1), per_point]
        assert rows[g] == expected


def test_restart_skips_finished_runs_and_reruns_a_killed_one(swept, tmp_path):
    out = copy_of(swept, tmp_path)
    killed = out / "grpo_8rollouts" / "seed1"
    (killed / "done.json").unlink()  # as a run stopped midway before its first checkpoint
    lines = open(killed / "log.jsonl").readlines()
    open(killed / "log.jsonl", "w").writelines(lines[:1])
    shutil.rmtree(killed / "ckpt")
    logs = sorted(set(glob.glob(str(out / "*" / "seed*" / "log.jsonl"))) - {str(killed / "log.jsonl")})
    mtimes = [os.path.getmtime(f) for f in logs]
    rc, stdout, stderr = run_sweep(out)
    assert rc == 0, stderr
    assert stdout.count(": skip, finished") == 3 and stdout.count(": start") == 1
    assert "grpo_8rollouts seed1: start" in stdout
    assert "--overwrite=True" in open(killed / "train.out").readline()  # train.py replaces what it left
    assert [os.path.getmtime(f) for f in logs] == mtimes
    assert [json.loads(line)["step"] for line in open(killed / "log.jsonl")] == [0, 1, 2]


def without_times(path):
    return [{k: v for k, v in json.loads(line).items() if not k.endswith(("time", "_s", "per_s"))} for line in open(path)]


def test_a_run_killed_after_a_checkpoint_resumes_from_it(swept, tmp_path):
    out = copy_of(swept, tmp_path)
    killed = out / "grpo_8rollouts" / "seed1"
    want = without_times(killed / "log.jsonl")
    for f in ("done.json", "log.jsonl", "samples.jsonl"):
        (killed / f).unlink()
    shutil.rmtree(killed / "ckpt")
    # the same run stopped after step 1's checkpoint: train.py with the sweep's args, cut at max_steps=1
    args = ["config/sweep_cpu.py", "config/grpo_8rollouts.py", "--seed=1", *TINY, "--max_steps=1"]
    subprocess.run([sys.executable, "train.py", *args, f"--out_dir={killed}"], cwd=ROOT, check=True,
                   capture_output=True)
    rc, stdout, stderr = run_sweep(out)
    assert rc == 0, stderr
    assert "grpo_8rollouts seed1: resume" in stdout and stdout.count(": skip, finished") == 3
    assert "--init_from=resume" in open(killed / "train.out").read()
    assert without_times(killed / "log.jsonl") == want  # as if it had never stopped (resume is exact)
    for f in out.glob("*/seed0/done.json"):
        f.unlink()  # stopped midway, then asked for with other args: its checkpoint is not theirs
    p = subprocess.run([sys.executable, "tools/sweep.py", PIPELINE, "--seeds=1", f"--out={out}", *TINY, "--top_k=50"],
                       cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.count(": start") == 2 and "resume" not in p.stdout


def test_changed_args_are_not_finished(swept, monkeypatch):
    monkeypatch.chdir(ROOT)  # config paths are relative to the repo root
    args = ["config/sweep_cpu.py", "config/minimal.py", "--seed=0", *TINY]
    run = dict(dir=str(swept[0] / "minimal" / "seed0"), fingerprint=sweep.fingerprint(args))
    assert sweep.finished(run)
    run["fingerprint"] = sweep.fingerprint(args[:-1])
    assert not sweep.finished(run)


def test_a_failed_run_does_not_stop_the_sweep(swept, tmp_path, monkeypatch, capsys):
    out = copy_of(swept, tmp_path)
    fake = tmp_path / "fails.py"
    fake.write_text("import sys; sys.exit('boom')\n")  # a train.py that fails at once (exit 1)
    monkeypatch.setattr(sweep, "TRAIN", str(fake))
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as e:  # minimal's runs are finished, so only rloo's run (and fail)
        sweep.main(["config/minimal.py,config/rloo.py", "--seeds=2", f"--out={out}", *TINY])
    stdout, stderr = capsys.readouterr()
    assert e.value.code == 1
    assert "error: 2 of 4 runs failed: rloo/seed0, rloo/seed1 (see their train.out)" in stderr
    assert stdout.count("skip, finished") == 2 and stdout.count("FAILED (exit 1)") == 2
    assert "boom" in open(out / "rloo" / "seed0" / "train.out").read()
    assert list(table_rows(out / "results.md")) == ["minimal"]  # the table of the runs that finished


def test_gpus_give_each_run_its_own_gpu(swept, tmp_path, monkeypatch, capsys):
    fake = tmp_path / "fake_train.py"  # records the GPU it was given and when, then logs a finished run
    fake.write_text(f"""import os, shutil, sys, time
out = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--out_dir=")][0]
t0 = time.time()
time.sleep(0.3)
open(os.path.join(out, "gpu.txt"), "w").write(f"{{os.environ['CUDA_VISIBLE_DEVICES']}} {{t0}} {{time.time()}}")
shutil.copy({str(swept[0] / "minimal" / "seed0" / "log.jsonl")!r}, os.path.join(out, "log.jsonl"))
""")
    monkeypatch.setattr(sweep, "TRAIN", str(fake))
    monkeypatch.chdir(ROOT)
    sweep.main([PIPELINE + ",config/rloo.py", "--seeds=2", f"--out={tmp_path / 's'}", "--gpus=3, 5", *TINY])
    used = [open(f).read().split() for f in glob.glob(str(tmp_path / "s" / "*" / "seed*" / "gpu.txt"))]
    assert len(used) == 6 and {g for g, _, _ in used} == {"3", "5"}
    for gpu in ("3", "5"):  # one run at a time on a GPU
        spans = sorted((float(a), float(b)) for g, a, b in used if g == gpu)
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:]))
    assert "on GPU 3" in capsys.readouterr().out
    assert open(tmp_path / "s" / "rloo" / "seed0" / "train.out").readline().startswith("$ CUDA_VISIBLE_DEVICES=")


def test_plot_without_matplotlib_writes_the_table_and_says_how(swept, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    plot.main([str(swept[0]), f"--out={tmp_path / 'r'}"])
    assert "pip install matplotlib" in capsys.readouterr().out
    assert not (tmp_path / "r.png").exists()
    assert table_rows(tmp_path / "r.md") == table_rows(swept[0] / "results.md")  # baseline: minimal by name


def test_plot_groups_seed_dirs_by_their_parent_and_plain_out_dirs_by_their_name(swept, tmp_path):
    plain = shutil.copytree(swept[0] / "minimal" / "seed1", tmp_path / "my_run")
    runs = plot.load_runs([str(swept[0] / "minimal" / "seed0"), str(swept[0] / "grpo_8rollouts"), str(plain)])
    assert {g: len(r) for g, r in runs.items()} == {"minimal": 1, "grpo_8rollouts": 2, "my_run": 1}


@pytest.mark.parametrize("main, argv, msg", [
    (sweep.main, ["nope"], "unknown pipeline 'nope'"),
    (sweep.main, ["advantage", "--seed=1"], "use --seeds"),
    (sweep.main, ["advantage", "--baseline=grpo2"], "not an entry"),
    (plot.main, ["no/such/dir"], "holds no log.jsonl"),
])
def test_user_errors_end_with_one_line(main, argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and msg in err and err.count("\n") == 1


def test_every_pipeline_config_exists():
    for entries in pipelines.PIPELINES.values():
        for cfg in entries.values():
            for arg in cfg:
                assert arg.startswith("--") or os.path.exists(os.path.join(ROOT, arg)), arg


def settings(name, cfg):
    """What train.py runs for a pipeline entry on the CPU base: its resolved knobs (but the seed and out_dir)."""
    import train
    from configurator import configure
    cut = pipelines.CPU_STEPS.get(name)
    args = [pipelines.CPU_BASE, *cfg] + ([f"--max_steps={cut}", f"--eval_interval={cut // 5}"] if cut else [])
    return configure({k: getattr(train, k) for k in train.config_keys}, [os.path.join(ROOT, a) if a.endswith(".py")
                                                                        else a for a in args])


def changed(a, b):
    return {k for k in a if a[k] != b[k]}


def test_an_entry_name_means_one_setting_in_every_pipeline():
    seen = {}
    for entries in pipelines.PIPELINES.values():
        for name, cfg in entries.items():
            assert seen.setdefault(name, cfg) == cfg, name


def test_a_setting_has_one_name_so_pipelines_share_their_runs():
    """The 32 x 8 point of the rollouts, budget and batch grids is one run, rollouts_8: under a name per grid,
    `sweep.py rollouts` after `sweep.py all` in the same --out would train it again."""
    names = {}
    for entries in pipelines.PIPELINES.values():
        for name, cfg in entries.items():
            names.setdefault(tuple(sorted(settings(name, cfg).items())), set()).add(name)
    assert [n for n in names.values() if len(n) > 1] == []


def test_all_runs_every_distinct_setting_once():
    key = lambda name, cfg: tuple(sorted(settings(name, cfg).items()))
    others = [p for k, p in pipelines.PIPELINES.items() if k != "all"]
    kept = {key(*item) for item in pipelines.PIPELINES["all"].items()}
    assert len(kept) == len(pipelines.PIPELINES["all"])  # no two entries of `all` train the same thing
    assert kept == {key(*item) for p in others for item in p.items()}  # and none is missing
    assert next(iter(pipelines.PIPELINES["all"])) == "minimal"  # the baseline of its table


def test_references_are_entries_of_their_pipeline():
    for pipeline, refs in pipelines.REFERENCES.items():
        for entry, ref in refs.items():
            entries = pipelines.PIPELINES[pipeline]
            assert entry in entries and ref in entries, (pipeline, entry)


def test_each_replay_point_is_paired_with_the_same_batch_without_replay():
    entries = pipelines.PIPELINES["replay"]
    pairs = pipelines.TWINS
    assert sorted(pairs) == sorted(n for n in entries if n.startswith("replay_")) and len(pairs) == 6
    assert {e: r for e, r in pipelines.REFERENCES["replay"].items() if e != r} == pairs  # twins: references only
    for replay, twin in pairs.items():
        a, b = settings(replay, entries[replay]), settings(twin, entries[twin])
        assert a["advantage"] == "replay" and a["replay_window"] == 8
        assert b["advantage"] == ("grpo" if b["rollouts"] > 1 else "none")  # GRPO; at n = 1 the raw reward
        assert changed(a, b) == {"advantage"}  # the same batch x rollouts and steps: replay's marginal effect


def test_one_problem_adds_one_layer_per_entry():
    entries = list(pipelines.PIPELINES["one_problem"].items())
    first = settings(*entries[0])
    assert (first["train_problems"], first["batch_size"], first["rollouts"], first["advantage"]) == (1, 1, 1, "none")
    layers = [changed(settings(*b), settings(*a)) for a, b in zip(entries, entries[1:])]
    assert layers == [{"rollouts"}, {"advantage"}, {"train_problems"}, {"train_problems"}, {"batch_size"}]
    assert pipelines.REFERENCES["one_problem"] == {b[0]: a[0] for a, b in zip(entries, entries[1:])}  # vs the last


def test_gspo_and_cispo_are_compared_with_ppo_at_the_same_updates_per_step():
    entries = pipelines.PIPELINES["loss"]
    ppo = settings("ppo_4minibatches", entries["ppo_4minibatches"])
    assert changed(ppo, settings("rollouts_8", entries["rollouts_8"])) == {"minibatches"}
    for name in ("gspo", "cispo"):
        assert pipelines.REFERENCES["loss"][name] == "ppo_4minibatches"
        assert settings(name, entries[name])["minibatches"] == ppo["minibatches"] == 4


def test_cpu_steps_cut_only_expensive_entries_and_end_on_an_eval_of_the_150_step_runs():
    for name, steps in pipelines.CPU_STEPS.items():
        c = settings(name, pipelines.PIPELINES["all"][name])
        if name in pipelines.PIPELINES["precision"]:  # cheap batches but slow CPU autocast: all cut alike, fp32 too
            assert steps == pipelines.CPU_STEPS["fp32"] and c["eval_interval"] == steps // 5
            continue
        assert c["batch_size"] * c["rollouts"] > 256 and steps % 25 == 0 and c["eval_interval"] == steps // 5


def test_precision_changes_only_the_precision_and_the_correction_and_pairs_tis_and_mis_with_the_bare_gap():
    entries = pipelines.PIPELINES["precision"]
    fp32 = settings("fp32", entries["fp32"])
    assert (fp32["dtype"], fp32["sampler_dtype"], fp32["is_correction"]) == ("float32", "", "none")
    # the minimal baseline, run for the CPU cut's steps
    assert changed(fp32, settings("minimal", ["config/minimal.py"])) == {"max_steps", "eval_interval"}
    want = dict(bf16_sampler={"sampler_dtype"}, bf16_sampler_tis={"sampler_dtype", "is_correction"},
                bf16_sampler_mis={"sampler_dtype", "is_correction"}, bf16={"dtype"}, fp16={"dtype"})
    assert {name: changed(settings(name, cfg), fp32) for name, cfg in entries.items() if name != "fp32"} == want
    assert pipelines.REFERENCES["precision"] == dict(bf16_sampler_tis="bf16_sampler",
                                                     bf16_sampler_mis="bf16_sampler")


def test_top_p_changes_only_the_nucleus_then_only_the_log_probs_it_scores():
    entries = pipelines.PIPELINES["top_p"]
    minimal, full = settings("minimal", entries["minimal"]), settings("top_p80", entries["top_p80"])
    assert entries["minimal"] == pipelines.PIPELINES["extra"]["minimal"]  # the same runs as the other pipelines'
    assert changed(full, minimal) == {"top_p"} and full["top_p"] == 0.8 and not full["truncated_logprobs"]
    assert changed(settings("top_p80_truncated", entries["top_p80_truncated"]), full) == {"truncated_logprobs"}
    assert pipelines.REFERENCES["top_p"] == dict(top_p80_truncated="top_p80")


def test_the_cpu_cut_and_pipeline_json_as_train_py_sees_them(tmp_path, monkeypatch):
    fake = tmp_path / "fake_train.py"  # records its args, then logs a finished run of one evaluation
    fake.write_text("""import json, os, sys
out = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--out_dir=")][0]
open(os.path.join(out, "argv.json"), "w").write(json.dumps(sys.argv[1:]))
line = dict(step=0, time=0.0, responses=0, **{"train_pass@1": 0.5, "test_pass@1": 0.5})
open(os.path.join(out, "log.jsonl"), "w").write(json.dumps(line) + "\\n")
""")
    monkeypatch.setattr(sweep, "TRAIN", str(fake))
    monkeypatch.chdir(ROOT)
    gpu_base = "config/paper/qwen2.5-0.5b_gsm8k.py"
    for base, out in ((pipelines.CPU_BASE, tmp_path / "cpu"), (gpu_base, tmp_path / "gpu")):
        sweep.main(["replay", "--seeds=1", f"--out={out}", f"--base={base}", "--jobs=1"])
        argv = json.load(open(out / "replay_2048x1" / "seed0" / "argv.json"))
        assert argv[:2] == [base, "config/paper/replay_2048x1.py"]
        assert ("--max_steps=25" in argv) == (base == pipelines.CPU_BASE)  # the paper's runs are not cut
        pipe = json.load(open(out / "pipeline.json"))
        assert pipe["entries"] == list(pipelines.PIPELINES["replay"]) and pipe["baseline"] == "budget256_64x4"
        assert pipe["references"] == pipelines.REFERENCES["replay"]
        rows = table_rows(out / "results.md")
        assert rows["replay_512x1"][6] == "minimal_512x1" and rows["minimal_512x1"][6] == "—"  # plot.py pairs them


def test_a_changed_included_file_changes_the_fingerprint(tmp_path, monkeypatch):
    """A paper run's settings live in paper.py, which the model configs beside it include(): a run finished before
    paper.py changed must not count as finished after."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "paper.py").write_text("kl_coef = 0.001\n")
    (tmp_path / "config" / "model.py").write_text('include("paper.py")\ntask = "gsm8k"\n')
    monkeypatch.chdir(tmp_path)
    before = sweep.fingerprint(["config/model.py", "--seed=0"])
    assert before["configs"]["config/paper.py"] == "kl_coef = 0.001\n"
    (tmp_path / "config" / "paper.py").write_text("kl_coef = 0.0\n")
    assert sweep.fingerprint(["config/model.py", "--seed=0"]) != before


# -----------------------------------------------------------------------------
# bad input and failed writes: one line, exit 2, nothing lost; finished runs are replaced only when asked by name

def one_error_line(rc, err, *words):
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def sweep_cli(*argv):
    p = subprocess.run([sys.executable, "tools/sweep.py", *map(str, argv)], cwd=ROOT, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_a_config_file_that_is_not_utf8_is_said_as_train_py_says_it(tmp_path):
    """sweep.py reads config files with train.py's reader (configurator.read_config): the same line."""
    (tmp_path / "a.py").write_text('include("b.py")\n')
    (tmp_path / "b.py").write_bytes(b"lr = 1\n# caf\xe9\n")  # Latin-1, not UTF-8
    rc, _, err = sweep_cli(tmp_path / "a.py", f"--out={tmp_path / 's'}")
    one_error_line(rc, err, "b.py' (included from", "line 2 is not UTF-8 text", "save it as UTF-8")
    train = subprocess.run([sys.executable, "train.py", str(tmp_path / "a.py")], cwd=ROOT, capture_output=True,
                           text=True)
    assert train.returncode == 2 and train.stderr == err
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_out_naming_a_file_is_one_line_and_the_file_is_kept(tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("mine\n")
    one_error_line(*sweep_cli("config/minimal.py", f"--out={tmp_path / 'f'}")[::2], "is a file, not a directory")
    monkeypatch.chdir(ROOT)
    for argv, msg in ((["config/minimal.py", f"--out={tmp_path / 'f' / 's'}"], "cannot create --out"),
                      (["config/nope.py", f"--out={tmp_path / 's'}"], "(run sweep.py from the repo root")):
        with pytest.raises(SystemExit) as e:
            sweep.main(argv)
        one_error_line(e.value.code, capsys.readouterr().err, msg)
    assert (tmp_path / "f").read_text() == "mine\n" and os.listdir(tmp_path) == ["f"]


def test_help_shows_the_defaults_and_what_out_is(capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(["--help"])
    options = " ".join(capsys.readouterr().out.split("options:")[1].split())  # argparse's line breaks undone
    assert e.value.code == 0 and "--out OUT the sweep dir" in options and "(default: out/sweep)" in options
    names = ("--seeds", "--base", "--jobs", "--gpus", "--out", "--baseline", "--rerun")
    for option, after in zip(names, names[1:] + ("other --key=value",)):
        assert "(default: " in options.split(f"{option} {option[2:].upper()} ")[1].split(f"{after} ")[0], option


def test_the_readmes_plot_examples_read_sweeps_default_out():
    default = sweep.parser().get_default("out")
    examples = [line for line in open(os.path.join(ROOT, "README.md")) if line.startswith("python tools/plot.py")]
    sweep_dirs = [line.split()[2] for line in examples if "sweep dir" in line]
    assert sweep_dirs and all(d == default for d in sweep_dirs), (default, sweep_dirs)


FAKE_TRAIN = """import json, os, shutil, sys
out = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--out_dir=")][0]
open(os.path.join(out, "argv.json"), "w").write(json.dumps(sys.argv[1:]))
shutil.copy({log!r}, os.path.join(out, "log.jsonl"))
"""


def fake_train(swept, tmp_path, monkeypatch):
    """A train.py that records its args and logs a finished run (a copy of a real log); runs in the repo root;
    tables only (a figure takes seconds)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN.format(log=str(swept[0] / "minimal" / "seed0" / "log.jsonl")))
    monkeypatch.setattr(sweep, "TRAIN", str(fake))
    monkeypatch.chdir(ROOT)


def mtimes(out):
    return {f: os.path.getmtime(f) for f in glob.glob(str(out / "*" / "seed*" / "*"))}


def test_a_safe_knob_keeps_finished_runs_and_max_steps_resumes_them(swept, tmp_path, monkeypatch, capsys):
    """--eval_batch_size is a knob train.py's resume may change (checkpoint.SAFE_TO_CHANGE): the runs are the
    same experiment, so a finished sweep stays finished; a longer --max_steps resumes each run."""
    out = copy_of(swept, tmp_path)
    before = mtimes(out)
    p = subprocess.run([sys.executable, "tools/sweep.py", PIPELINE, "--seeds=2", f"--out={out}", *TINY,
                        "--eval_batch_size=64", "--log_samples=4"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.count(": skip, finished") == 4 and ": start" not in p.stdout, p.stderr
    assert mtimes(out) == before  # no run was touched
    fake_train(swept, tmp_path, monkeypatch)
    sweep.main([PIPELINE, "--seeds=2", f"--out={out}", *TINY, "--max_steps=3"])
    assert capsys.readouterr().out.count(": resume") == 4
    argv = json.load(open(out / "minimal" / "seed1" / "argv.json"))
    assert "--init_from=resume" in argv and "--overwrite=True" not in argv and "--max_steps=3" in argv
    assert sweep.RESUMABLE == set(checkpoint.SAFE_TO_CHANGE) and sweep.SAME_RESULT == sweep.RESUMABLE - {"max_steps"}


def test_a_finished_run_of_other_settings_is_replaced_only_when_rerun_names_it(swept, tmp_path, monkeypatch, capsys):
    out = copy_of(swept, tmp_path)
    before = mtimes(out)
    rc, stdout, stderr = sweep_cli(PIPELINE, "--seeds=2", f"--out={out}", *TINY, "--top_k=50")
    one_error_line(rc, stderr, "4 finished run(s)", "minimal/seed0: (none) -> --top_k=50",
                   "pass --rerun=grpo_8rollouts,minimal")
    assert ": start" not in stdout and mtimes(out) == before  # refused before any run started
    fake_train(swept, tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as e:  # naming one entry does not release the other's runs
        sweep.main([PIPELINE, "--seeds=2", f"--out={out}", *TINY, "--top_k=50", "--rerun=minimal"])
    assert e.value.code == 2 and "pass --rerun=grpo_8rollouts to" in capsys.readouterr().err
    sweep.main(["config/minimal.py", "--seeds=2", f"--out={out}", *TINY, "--top_k=50", "--rerun=minimal"])
    assert capsys.readouterr().out.count(": start") == 2
    argv = json.load(open(out / "minimal" / "seed0" / "argv.json"))
    assert "--overwrite=True" in argv and "--top_k=50" in argv
    assert json.load(open(out / "minimal" / "seed0" / "done.json"))["fingerprint"]["args"][-1] == "--top_k=50"
    with pytest.raises(SystemExit):
        sweep.main(["config/minimal.py", "--seeds=1", f"--out={out}", "--rerun=rloo"])
    assert "--rerun=rloo: rloo not an entry" in capsys.readouterr().err


@pytest.mark.parametrize("file, content", [
    ("done.json", b"[1]"), ("done.json", b'{"fingerprint": 1}'), ("done.json", b"\xff\xfe"),
    ("done.json", b'{"fingerprint": {"args": [1], "configs": {}}}'), ("run.json", b'{"args": "x"}'),
    ("log.jsonl", b"[1]\n"), ("log.jsonl", b'{"step": 2, "test_pass@1": "high"}\n'), ("log.jsonl", b"\xff\n"),
])
def test_a_run_file_that_is_cut_corrupt_or_foreign_is_not_a_traceback(swept, tmp_path, monkeypatch, capsys, file,
                                                                       content):
    """A damaged done.json or log: the run is not finished and is trained again (resumed, or started over),
    the others are skipped. A damaged run.json: the run is still finished (done.json says so)."""
    out = copy_of(swept, tmp_path)
    (out / "minimal" / "seed0" / file).write_bytes(content)
    fake_train(swept, tmp_path, monkeypatch)
    sweep.main([PIPELINE, "--seeds=2", f"--out={out}", *TINY])
    stdout = capsys.readouterr().out
    again = file != "run.json"
    assert stdout.count(": skip, finished") == 4 - again and "FAILED" not in stdout
    assert ("minimal seed0: start" in stdout or "minimal seed0: resume" in stdout) == again


def test_a_skipped_run_with_a_foreign_wall_time_still_says_its_result(swept, tmp_path, monkeypatch, capsys):
    out = copy_of(swept, tmp_path)
    done = out / "minimal" / "seed0" / "done.json"
    done.write_text(json.dumps(dict(json.load(open(done)), wall_s="long")))
    fake_train(swept, tmp_path, monkeypatch)
    sweep.main([PIPELINE, "--seeds=2", f"--out={out}", *TINY])
    assert capsys.readouterr().out.count(": skip, finished") == 4


def test_a_failed_write_of_pipeline_json_keeps_the_previous_one(swept, tmp_path, monkeypatch, capsys):
    """A full disk (made to fail in the write itself, so that it also fails for root)."""
    out = copy_of(swept, tmp_path)
    before = (out / "pipeline.json").read_text()
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        if "w" in mode:
            real_open(path, mode).close()
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)
    monkeypatch.setattr(plot, "open", full_disk, raising=False)
    fake_train(swept, tmp_path, monkeypatch)
    with pytest.raises(SystemExit) as e:
        sweep.main(["config/minimal.py", "--seeds=1", f"--out={out}", *TINY])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "could not write" in err and "No space left" in err
    assert (out / "pipeline.json").read_text() == before and not (out / "pipeline.json.tmp").exists()
