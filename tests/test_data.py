"""GSM8K and MATH loading from tiny local files in the hub's schemas, bad files and hub failures, the
train_problems subset, and prompt encoding."""
import collections
import logging
import os
import random
import string

import datasets
import pytest

import data
import reward

GSM8K_SUFFIX = 'Let\'s think step by step and output the final answer after "####".'
MATH_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."

GSM8K = [  # openai/gsm8k (main): question, answer (the solution, ending in '#### n')
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
               "altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10"},
]
LIGHTEVAL = [  # DigitalLearningGmbH/MATH-lighteval: problem, level, solution, type
    {"problem": "What is $\\frac{2}{4}$ in lowest terms?", "level": "Level 1",
     "solution": "Divide both by 2: $\\frac{2}{4} = \\boxed{\\frac{1}{2}}$.", "type": "Prealgebra"},
]
MATH500 = [  # HuggingFaceH4/MATH-500: problem, solution, answer, subject, level, unique_id
    {"problem": "Compute $1 - \\frac{1}{2}$.", "solution": "$1 - \\frac{1}{2} = \\boxed{\\frac{1}{2}}$.",
     "answer": "\\frac{1}{2}", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
]


@pytest.fixture(autouse=True)
def quiet_private_cache(tmp_path, monkeypatch):
    """datasets caches what it loads: keep that out of the user's cache, and its progress bars out of stderr."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def write(rows, path):
    """Rows to a .parquet or .jsonl file, through datasets as the hub's files were made."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(path) if path.endswith(".parquet") else ds.to_json(path, lines=True)
    return path


def names(layout, fmt, split):
    return f"{split}.{fmt}" if layout == "plain" else f"{split}-00000-of-00001.{fmt}"


def exits_with_one_line(capsys, fn, *args):
    """fn(*args) must end the run with exit code 2 and one line on stderr; returns that line."""
    with pytest.raises(SystemExit) as e:
        fn(*args)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("layout, fmt", [("plain", "parquet"), ("plain", "jsonl"), ("shards", "parquet")])
def test_gsm8k_from_a_local_directory(tmp_path, layout, fmt):
    for split, rows in (("train", GSM8K), ("test", GSM8K[:1])):
        write(rows, str(tmp_path / "main" / names(layout, fmt, split)))
    train_set = data.load_split("gsm8k", "train", str(tmp_path / "main"))
    assert train_set == [{"prompt": f"{r['question']} {GSM8K_SUFFIX}", "answer": r["answer"]} for r in GSM8K]
    (p,) = data.load_split("gsm8k", "test", str(tmp_path / "main"))
    assert reward.score("gsm8k", "48 + 24 = 72 clips.\n#### 72", p["answer"]) == 1.0
    assert reward.score("gsm8k", "#### 73", p["answer"]) == 0.0


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_math_trains_on_lighteval_solutions_and_tests_on_math500_answers(tmp_path, fmt):
    write(LIGHTEVAL, str(tmp_path / f"train.{fmt}"))
    write(MATH500, str(tmp_path / f"test.{fmt}"))
    (tr,) = data.load_split("math", "train", str(tmp_path))
    (te,) = data.load_split("math", "test", str(tmp_path))
    assert tr == {"prompt": f"{LIGHTEVAL[0]['problem']} {MATH_SUFFIX}", "answer": LIGHTEVAL[0]["solution"]}
    assert te == {"prompt": f"{MATH500[0]['problem']} {MATH_SUFFIX}", "answer": "\\frac{1}{2}"}
    for p in (tr, te):
        assert reward.score("math", "So it is \\boxed{\\frac{1}{2}}.", p["answer"]) == 1.0
        assert reward.score("math", "So it is \\boxed{\\frac{1}{3}}.", p["answer"]) == 0.0


def test_math_full_tests_on_lighteval_and_a_single_file_serves_both_splits(tmp_path, capsys):
    path = write(LIGHTEVAL, str(tmp_path / "math.parquet"))
    train_set, test_set = (data.load_split("math_full", s, path) for s in ("train", "test"))
    assert train_set == test_set and test_set[0]["answer"] == LIGHTEVAL[0]["solution"]
    err = capsys.readouterr().err  # said once, when the test split is taken from the training file
    assert err.count("\n") == 1 and err.startswith("warning: ") and "test split is the training problems" in err


@pytest.mark.parametrize("task, rows, column", [
    ("gsm8k", [{"query": "What is 1+1?", "answer": "#### 2"}], "question"),
    ("gsm8k", [{"question": "What is 1+1?", "response": "#### 2"}], "answer"),
    ("math", [{"problem": "What is 1+1?", "level": "Level 1"}], "answer or solution"),
])
def test_a_missing_column_is_named(tmp_path, capsys, task, rows, column):
    path = write(rows, str(tmp_path / "train.jsonl"))
    err = exits_with_one_line(capsys, data.load_split, task, "train", str(tmp_path))
    assert f"no column {column};" in err and path in err and "train split" in err
    assert ", ".join(rows[0]) in err  # the columns it does have


@pytest.mark.parametrize("value", ["", "  ", None])
def test_an_empty_value_is_named(tmp_path, capsys, value):
    write([GSM8K[0], {"question": "What is 1+1?", "answer": value}], str(tmp_path / "test.parquet"))
    err = exits_with_one_line(capsys, data.load_split, "gsm8k", "test", str(tmp_path))
    assert "row 1: 'answer' must be a non-empty string" in err


def test_a_missing_data_path_or_split_file_exits_2(tmp_path, capsys):
    assert "does not exist" in exits_with_one_line(capsys, data.load_split, "gsm8k", "train", str(tmp_path / "nope"))
    write(GSM8K, str(tmp_path / "train.parquet"))
    assert "has no test.parquet" in exits_with_one_line(capsys, data.load_split, "gsm8k", "test", str(tmp_path))
    bad = tmp_path / "gsm8k.csv"
    bad.write_text("question,answer\n")
    assert "must be a .parquet or .jsonl" in exits_with_one_line(capsys, data.load_split, "gsm8k", "test", str(bad))


def test_an_unknown_task_exits_2(capsys):
    assert "unknown task 'gsm9k': one of arith, gsm8k, math, math_full" in \
        exits_with_one_line(capsys, data.load_split, "gsm9k", "train")


def parquet_with_no_rows(path):
    datasets.Dataset.from_list(GSM8K).select([]).to_parquet(path)


def parquet_cut_short(path):
    write(GSM8K, path)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:len(raw) // 2])  # a download that stopped half way


@pytest.mark.parametrize("name, content, msg", [
    ("train.jsonl", b"", "is empty (0 bytes): download it again"),
    ("train.parquet", b"", "is empty (0 bytes): download it again"),
    ("train.jsonl", b"\n  \n", "has no rows"),
    ("train.parquet", parquet_with_no_rows, "has no rows"),
    ("train.jsonl", b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9?", "answer": "#### 2"}\n',
     "line 2 is not UTF-8 (invalid continuation byte): save the file as UTF-8"),
    ("train.parquet", b"PAR1 this is not parquet", "is not a readable parquet file (ArrowInvalid"),
    ("train.parquet", parquet_cut_short, "is not a readable parquet file (ArrowInvalid"),
    ("train.jsonl", b'{"question": "q", "answer": "#### 1"}\n{"question": "q2", "ans\n',
     "{path} line 2 is not JSON (Unterminated string"),
])
def test_a_file_that_cannot_be_used_is_named_in_one_line(tmp_path, capsys, caplog, name, content, msg):
    path = str(tmp_path / name)
    content(path) if callable(content) else open(path, "wb").write(content)
    level = logging.getLogger("datasets").level
    err = exits_with_one_line(capsys, data.load_split, "gsm8k", "train", str(tmp_path))
    assert path in err and msg.format(path=path) in err
    # datasets logs a parse failure before raising it: that would be a second line, so it is quieted, then restored
    assert not [r for r in caplog.records if r.name.startswith("datasets")]
    assert logging.getLogger("datasets").level == level


def test_an_unreadable_data_path_or_file_is_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "train.jsonl").mkdir()
    err = exits_with_one_line(capsys, data.load_split, "gsm8k", "train", str(tmp_path))
    assert f"{tmp_path / 'train.jsonl'} cannot be read (Is a directory)" in err
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a non-root user sees a chmod 000 directory
    err = exits_with_one_line(capsys, data.load_split, "gsm8k", "train", str(tmp_path))
    assert f"data_path {str(tmp_path)!r} is not readable (permission denied)" in err


def spy_load_dataset(monkeypatch, result):
    """Replace datasets.load_dataset with one that records its calls and returns or raises `result`."""
    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))
        if isinstance(result, Exception):
            raise result
        return result(*args, **kwargs)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    return calls


@pytest.mark.parametrize("task, split, hub", [
    ("gsm8k", "train", ("openai/gsm8k", "main")),
    ("gsm8k", "test", ("openai/gsm8k", "main")),
    ("math", "train", ("DigitalLearningGmbH/MATH-lighteval", "default")),
    ("math", "test", ("HuggingFaceH4/MATH-500", None)),
    ("math_full", "test", ("DigitalLearningGmbH/MATH-lighteval", "default")),
])
def test_hub_datasets_and_splits(monkeypatch, task, split, hub):
    rows = GSM8K if task == "gsm8k" else MATH500 if hub[0].endswith("500") else LIGHTEVAL
    calls = spy_load_dataset(monkeypatch, lambda *a, **kw: datasets.Dataset.from_list(rows))
    assert len(data.load_split(task, split)) == len(rows)
    assert calls == [(hub, {"split": split})]  # never trust_remote_code: hub code must not run here


@pytest.mark.parametrize("error", [
    ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)"),
    datasets.exceptions.DatasetNotFoundError("Dataset 'openai/gsm8k' doesn't exist on the Hub\nor cannot be accessed."),
])
def test_an_unreachable_hub_says_to_pass_data_path(monkeypatch, capsys, error):
    spy_load_dataset(monkeypatch, error)
    err = exits_with_one_line(capsys, data.load_split, "gsm8k", "train")
    assert "openai/gsm8k" in err and "data_path=" in err and type(error).__name__ in err


def test_local_files_load_through_datasets_without_remote_code(tmp_path, monkeypatch):
    real = datasets.load_dataset
    calls = spy_load_dataset(monkeypatch, real)
    write(GSM8K, str(tmp_path / "train.jsonl"))
    data.load_split("gsm8k", "train", str(tmp_path))
    assert calls == [(("json",), {"data_files": [str(tmp_path / "train.jsonl")], "split": "train"})]


# -----------------------------------------------------------------------------
# prompt encoding

QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def char_tokenizer(chat_template=None):
    """A one-token-per-character tokenizer with chat special tokens; it adds a BOS, as Llama's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    vocab = {c: i for i, c in enumerate(["[UNK]", "<s>"] + sorted(set(string.printable)))}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    t.decoder = decoders.Fuse()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", bos_token="<s>", eos_token="<|endoftext|>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = chat_template
    return tok


def test_a_chat_template_wraps_the_prompt_in_one_user_turn(tmp_path):
    write(GSM8K, str(tmp_path / "train.parquet"))
    p = data.load_split("gsm8k", "train", str(tmp_path))[0]
    tok = char_tokenizer(QWEN_TEMPLATE)
    ids = data.encode_prompt(tok, "gsm8k", p)
    assert type(ids) is list and all(type(i) is int for i in ids)
    user = f"{GSM8K[0]['question']} {GSM8K_SUFFIX}"
    assert tok.decode(ids) == f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    assert tok.convert_tokens_to_ids("<|im_end|>") in data.stop_ids(tok)
    assert tok.decode(data.encode_prompt(tok, "arith", {"prompt": "007+123="})) == "007+123="  # arith stays raw


def test_without_a_chat_template_the_prompt_is_plain_text_after_the_bos():
    p = {"prompt": f"What is $1 - \\frac{{1}}{{2}}$? {MATH_SUFFIX}", "answer": "\\frac{1}{2}"}
    tok = char_tokenizer()
    ids = data.encode_prompt(tok, "math", p)
    assert ids[0] == tok.bos_token_id and tok.decode(ids[1:]) == p["prompt"]
    assert data.encode_prompt(tok, "arith", {"prompt": "007+123="})[0] != tok.bos_token_id


# -----------------------------------------------------------------------------
# train_problems

LETTERS = list("abcdefghij")


def test_train_subset_is_a_pinned_seeded_choice_and_zero_means_all():
    # pinned: a change of the random stream would change which problems every train_problems run trains on
    assert data.train_subset(LETTERS, 3, seed=0) == ["d", "j", "e"]
    assert data.train_subset(LETTERS, 3, seed=1) == ["f", "a", "e"]
    assert data.train_subset(LETTERS, 0, seed=0) == LETTERS  # all, in file order
    assert sorted(data.train_subset(LETTERS, 10, seed=0)) == LETTERS


def test_train_subsets_are_nested_and_depend_only_on_their_arguments():
    problems = [{"prompt": f"{i}+0=", "answer": str(i)} for i in range(50)]
    full = data.train_subset(problems, 50, seed=7)
    random.seed(123)  # the global stream (which training also draws from) must not matter
    for n in range(1, 51):
        assert data.train_subset(problems, n, seed=7) == full[:n]  # more data only adds problems
    assert problems == [{"prompt": f"{i}+0=", "answer": str(i)} for i in range(50)]  # not shuffled in place
    assert len({p["answer"] for p in full}) == 50


def test_each_problem_is_as_likely_to_be_the_one_problem():
    counts = collections.Counter(data.train_subset(LETTERS, 1, seed=s)[0] for s in range(2000))
    assert sorted(counts) == LETTERS and all(140 < c < 260 for c in counts.values()), counts  # 200 each on average


@pytest.mark.parametrize("n", [11, -1])
def test_train_problems_beyond_the_split_exits_2_naming_both_numbers(capsys, n):
    err = exits_with_one_line(capsys, data.train_subset, LETTERS, n, 0)
    assert f"train_problems={n} must be between 1 and the 10 training problems (0 = all)" in err
