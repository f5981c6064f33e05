"""Config files and --key=value overrides; user mistakes exit 2 with one line."""
import pytest

from configurator import configure

DEFAULTS = dict(learning_rate=1e-4, batch_size=32, advantage="none", mask_truncated=False)


def test_files_then_overrides_later_wins(tmp_path):
    f = tmp_path / "a.py"
    f.write_text("# experiment\nbatch_size = 8\nadvantage = 'grpo'\n")
    out = configure(DEFAULTS, [str(f), "--batch_size=16", "--learning_rate=1", "--mask_truncated=True"])
    assert out == dict(learning_rate=1.0, batch_size=16, advantage="grpo", mask_truncated=True)
    assert configure(DEFAULTS, ["--advantage=rloo"])["advantage"] == "rloo"  # bare word is a string


@pytest.mark.parametrize("argv, msg", [
    (["--bacth_size=3"], "unknown config key 'bacth_size'"),
    (["--batch_size=3.5"], "must be int"),
    (["--mask_truncated=1"], "must be bool"),
    (["--learning_rate=fast"], "must be float"),
    (["missing_config.py"], "not found"),
    (["--batch_size"], "must look like --key=value"),
])
def test_user_errors_exit_2_with_one_line(argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        configure(DEFAULTS, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_unknown_key_in_config_file(tmp_path, capsys):
    f = tmp_path / "bad.py"
    f.write_text("learning_rat = 1e-3\n")
    with pytest.raises(SystemExit):
        configure(DEFAULTS, [str(f)])
    assert "learning_rat" in capsys.readouterr().err
