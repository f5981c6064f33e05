"""sweep.py's command line without a real sweep: bad input ends in one line (exit 2) before anything is
written, --help, the fingerprint of included config files, and config paths from any directory."""
import json
import os
import subprocess
import sys

import pytest

import plot
import sweep
from test_sweep import ROOT, TINY, one_error_line, recording_train, sweep_cli


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
                      (["config/nope.py", f"--out={tmp_path / 's'}"],
                       "not found in the working directory or the repo")):
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


def test_sweep_runs_from_any_directory_and_records_its_runs_as_from_the_root(tmp_path, monkeypatch):
    """The pipelines' config/... paths are read from the repo when the working directory has no such file
    (sweep.config_path), and train.py is given the file read; a run records them as named, so a sweep dir
    started elsewhere matches one started from the root. --out and a config file of the working directory's
    keep their meaning there, and its own config/minimal.py would come first."""
    recording_train(tmp_path, monkeypatch)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # the table only (a figure takes seconds)
    args = ["config/sweep_cpu.py", "config/minimal.py", "--seed=0", *TINY]
    monkeypatch.chdir(ROOT)
    from_root = sweep.fingerprint(args)
    work = tmp_path / "elsewhere"
    (work / "config").mkdir(parents=True)  # a config/ of its own, without the pipelines' files
    (work / "mine.py").write_text("top_k = 5\n")
    monkeypatch.chdir(work)
    sweep.main(["config/minimal.py,mine.py", "--seeds=1", "--out=s", *TINY])
    run = work / "s" / "minimal" / "seed0"
    assert json.load(open(run / "run.json")) == from_root
    argv = json.load(open(run / "argv.json"))
    assert argv[:2] == [os.path.join(ROOT, "config", "sweep_cpu.py"), os.path.join(ROOT, "config", "minimal.py")]
    assert json.load(open(work / "s" / "mine" / "seed0" / "argv.json"))[1] == "mine.py"
    (work / "config" / "minimal.py").write_text("top_k = 7\n")
    assert sweep.fingerprint(args)["configs"]["config/minimal.py"] == "top_k = 7\n"
