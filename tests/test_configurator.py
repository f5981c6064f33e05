"""Config files, include(), --key=value overrides and --help; user mistakes exit 2 with one line."""
import pytest

from configurator import config_files, configure

DEFAULTS = dict(learning_rate=1e-4, batch_size=32, advantage="none", mask_truncated=False)


def exits_with_one_line(capsys, argv, defaults=DEFAULTS):
    """configure(defaults, argv) must end with exit code 2 and one `error:` line on stderr; returns it."""
    with pytest.raises(SystemExit) as e:
        configure(defaults, argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_files_then_overrides_later_wins(tmp_path):
    f = tmp_path / "a.py"
    f.write_text("# experiment\nbatch_size = 8\nadvantage = 'grpo'\n")
    out = configure(DEFAULTS, [str(f), "--batch_size=16", "--learning_rate=1", "--mask_truncated=True"])
    assert out == dict(learning_rate=1.0, batch_size=16, advantage="grpo", mask_truncated=True)
    assert configure(DEFAULTS, ["--advantage=rloo"])["advantage"] == "rloo"  # bare word is a string
    assert configure(DEFAULTS, ["--batch_size= 4"])["batch_size"] == 4


@pytest.mark.parametrize("argv, msg", [
    (["--bacth_size=3"], "unknown config key 'bacth_size' (from --bacth_size=3); did you mean 'batch_size'?"),
    (["--=3"], "unknown config key ''"),
    (["--batch_size=3.5"], "must be int, got float 3.5"),
    (["--mask_truncated=1"], "must be bool (True or False), got int 1"),
    (["--mask_truncated=true"], "must be bool (True or False), got str 'true'"),
    (["--learning_rate=fast"], "must be float"),
    (["--batch_size=" + "(" * 200], "must be int"),  # literal_eval's own limits are a bad value, not a crash
    (["missing_config.py"], "config file 'missing_config.py' not found"),
    (["--batch_size"], "must look like --key=value"),
    (["-batch_size=3"], "'-batch_size=3' is neither a config file nor --key=value"),
    (["batch_size=3"], "'batch_size=3' is neither a config file nor --key=value"),
    (["-x"], "neither a config file nor --key=value (--help lists the keys)"),
])
def test_user_errors_exit_2_with_one_line(argv, msg, capsys):
    assert msg in exits_with_one_line(capsys, argv)


def test_unknown_key_in_config_file(tmp_path, capsys):
    f = tmp_path / "bad.py"
    f.write_text("learning_rat = 1e-3\n")
    assert "'learning_rat' (from " in exits_with_one_line(capsys, [str(f)])


@pytest.mark.parametrize("content, msg", [
    (b"batch_size = 8\nseed = 0  # caf\xe9\n", "line 2 is not UTF-8 text (invalid continuation byte): save it as UTF-8"),
    (b"batch_size = 8\nlearning_rate = = 3\n", "line 2: invalid syntax"),
    (b"batch_size = 8 // 0\n", "failed: ZeroDivisionError: integer division or modulo by zero"),
    (b"batch_size = 8\x00\n", "null bytes"),
])
def test_a_broken_config_file_is_named_with_what_is_wrong(tmp_path, capsys, content, msg):
    f = tmp_path / "broken.py"
    f.write_bytes(content)
    err = exits_with_one_line(capsys, [str(f)])
    assert f"config file {str(f)!r}" in err and msg in err


def test_a_directory_or_a_name_without_py_is_not_a_config_file(tmp_path, capsys):
    assert "is a directory; pass a .py file" in exits_with_one_line(capsys, [str(tmp_path)])
    (tmp_path / "minimal.py").write_text("batch_size = 8\n")
    assert f"did you mean {str(tmp_path / 'minimal.py')!r}?" in exits_with_one_line(capsys, [str(tmp_path / "minimal")])


def test_what_a_config_file_may_hold_besides_assignments(tmp_path):
    f = tmp_path / "a.py"
    f.write_bytes("\ufeffimport math\n_half = 0.5\nlearning_rate = math.sqrt(_half) / 1000  # é\n".encode())
    assert configure(DEFAULTS, [str(f)])["learning_rate"] == 0.5 ** 0.5 / 1000  # a BOM, modules, _private names


# -----------------------------------------------------------------------------
# include()

def test_include_reads_relative_to_the_including_file_and_later_lines_win(tmp_path, monkeypatch):
    (tmp_path / "config" / "sub").mkdir(parents=True)
    (tmp_path / "config" / "paper.py").write_text("learning_rate = 1e-6\nbatch_size = 64\nadvantage = 'grpo'\n")
    (tmp_path / "config" / "model.py").write_text("batch_size = 16\ninclude('paper.py')  # every-run settings\n"
                                                  "batch_size = 8\n")
    (tmp_path / "config" / "sub" / "deep.py").write_text("include('../model.py')\nmask_truncated = True\n")
    monkeypatch.chdir(tmp_path / "config" / "sub")  # paths resolve against the file, not the working directory
    out = configure(DEFAULTS, [str(tmp_path / "config" / "model.py")])
    assert out == dict(learning_rate=1e-6, batch_size=8, advantage="grpo", mask_truncated=False)
    out = configure(DEFAULTS, ["deep.py", "--advantage=rloo"])
    assert out == dict(learning_rate=1e-6, batch_size=8, advantage="rloo", mask_truncated=True)
    (tmp_path / "config" / "paper.py").write_text("batch_size = 64\n")  # include() overrides what came before it
    assert configure(DEFAULTS, [str(tmp_path / "config" / "paper.py"), "deep.py"])["learning_rate"] == 1e-4
    assert config_files("deep.py") == ["deep.py", "../model.py", "../paper.py"]  # what sweep.py fingerprints


@pytest.mark.parametrize("files, msg", [
    ({"a.py": "include('nope.py')\n"}, "nope.py' (included from '{d}/a.py') not found"),
    ({"a.py": "include('a.py')\n"}, "includes itself: {d}/a.py -> {d}/a.py"),
    ({"a.py": "include('b.py')\n", "b.py": "include('a.py')\n"}, "includes itself: {d}/a.py -> {d}/b.py -> {d}/a.py"),
    ({"a.py": "include(3)\n"}, "include() in '{d}/a.py' needs a file name string, got 3"),
    ({"a.py": "include('b.py')\n", "b.py": "batch_size = \n"}, "b.py' (included from '{d}/a.py') line 1: invalid syntax"),
    ({"a.py": "include('b.py')\n", "b.py": "bacth_size = 3\n"}, "unknown config key 'bacth_size' (from {d}/a.py)"),
])
def test_include_errors_exit_2_with_one_line(tmp_path, capsys, files, msg):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert msg.format(d=tmp_path) in exits_with_one_line(capsys, [str(tmp_path / "a.py")])


# -----------------------------------------------------------------------------
# --help

SCRIPT = '''"""A script: its config block is what --help prints."""
import sys

from configurator import config_files, configure

# -----------------------------------------------------------------------------
# run
out_dir = "out/#1"  # where "#" in a value is not a comment
seed = 0  # seeds everything
# loss
learning_rate = 1e-4  # AdamW peak learning rate
batch_size = 32
# -----------------------------------------------------------------------------
config_keys = ["out_dir", "seed", "learning_rate", "batch_size"]

# prompt encoding


def encode():
    seed = 1  # not the knob
    return seed


if __name__ == "__main__":
    out_dir = "elsewhere"  # not the knob's definition either
'''

HELP = """usage: python script.py [config.py ...] [--key=value ...]  (later ones win; see configurator.py)

# run
out_dir = 'out/#1'     # where "#" in a value is not a comment
seed = 0               # seeds everything

# loss
learning_rate = 0.001  # AdamW peak learning rate
batch_size = 32
"""


def test_help_prints_the_knobs_by_section_with_their_comments_and_values(tmp_path, capsys):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    defaults = dict(out_dir="out/#1", seed=0, learning_rate=1e-4, batch_size=32)
    with pytest.raises(SystemExit) as e:
        configure(defaults, ["--learning_rate=1e-3", "--help", "--not_reached"], source=str(script))
    assert e.value.code == 0 and capsys.readouterr().out == HELP  # the values in effect where --help stands
    with pytest.raises(SystemExit):
        configure(dict(defaults, extra=1), ["-h"])  # no source: no comments, but still every knob
    assert capsys.readouterr().out.splitlines()[2:] == ["out_dir = 'out/#1'", "seed = 0", "learning_rate = 0.0001",
                                                        "batch_size = 32", "extra = 1"]


@pytest.mark.parametrize("name", ["train", "evaluate"])
def test_every_knob_of_train_and_evaluate_has_a_comment_in_help(name, capsys):
    module = __import__(name)
    keys = [k for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))]
    keys = getattr(module, "config_keys", keys)
    with pytest.raises(SystemExit):
        configure({k: getattr(module, k) for k in keys}, ["--help"], source=module.__file__)
    lines = [line for line in capsys.readouterr().out.splitlines()[1:] if line and not line.startswith("# ")]
    assert len(lines) == len(keys) and all("  # " in line for line in lines), [line for line in lines if "  #" not in line]
