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


# -----------------------------------------------------------------------------
# reruns of a finished sweep: finished runs are replaced only when asked by name, damaged files are no traceback

def one_error_line(rc, err, *words):
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def recording_train(tmp_path, monkeypatch):
    """sweep.py's train.py replaced by a script that records its args (argv.json) and logs a finished run of one
    evaluation: the sweep's bookkeeping without training."""
    fake = tmp_path / "fake_train.py"  # records its args, then logs a finished run of one evaluation
    fake.write_text("""import json, os, sys
out = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--out_dir=")][0]
open(os.path.join(out, "argv.json"), "w").write(json.dumps(sys.argv[1:]))
line = dict(step=0, time=0.0, responses=0, **{"train_pass@1": 0.5, "test_pass@1": 0.5})
open(os.path.join(out, "log.jsonl"), "w").write(json.dumps(line) + "\\n")
""")
    monkeypatch.setattr(sweep, "TRAIN", str(fake))


def sweep_cli(*argv):
    p = subprocess.run([sys.executable, "tools/sweep.py", *map(str, argv)], cwd=ROOT, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


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
