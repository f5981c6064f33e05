"""
Tasks and their splits, as lists of {"prompt": str, "answer": str}, and the prompt encoding.

- arith: the built-in task, 3-digit addition with zero-padded operands ("007+123=" -> "130"),
  generated from a seed; its splits are disjoint and never depend on the training seed.
- gsm8k: openai/gsm8k (main), train 7473 / test 1319. The answer is the whole solution ending in
  "#### 72", kept as is: reward.py takes the number after the "####".
- math: train DigitalLearningGmbH/MATH-lighteval (7500; the answer is the solution, whose last \\boxed{}
  reward.py extracts), test HuggingFaceH4/MATH-500 (its short `answer`).
- math_full: MATH-lighteval's train and its whole test split (5000).

data_path replaces the hub with local files in the hub's columns: a directory holding {split}.parquet,
{split}.jsonl or hub-style shards {split}-*.parquet (a downloaded repo's data/ or main/ folder), or a
single .parquet/.jsonl file, which then serves whichever split is asked (train and test alike).
A file that can't be used (empty, no rows, not UTF-8, corrupt, unreadable) ends the run with one line
naming it, before any training.

Which training problems a step sees: train_subset (train_problems: a fixed, seeded subset), then
batch_indices (shuffled epochs), both pure functions of their arguments so a resumed run sees the same.
"""
import functools
import glob
import json
import logging
import os
import random
import sys

from machinery.cli import die, portable_path

TASKS = ("arith", "gsm8k", "math", "math_full")
ARITH_SEED = 1234  # fixes the arithmetic splits; the base policy in assets/tiny-arith was made on them
ARITH_SIZES = {"train": 2000, "test": 500}
LIGHTEVAL = ("DigitalLearningGmbH/MATH-lighteval", "default")
HUB = {  # task -> split -> (dataset, config); each hub split is named like ours
    "gsm8k": {"train": ("openai/gsm8k", "main"), "test": ("openai/gsm8k", "main")},
    "math": {"train": LIGHTEVAL, "test": ("HuggingFaceH4/MATH-500", None)},
    "math_full": {"train": LIGHTEVAL, "test": LIGHTEVAL},
}
COLUMNS = {  # task -> (prompt column, answer columns by preference)
    "gsm8k": ("question", ("answer",)),
    # MATH-500's short answer where there is one, else MATH-lighteval's solution (reward.py reads its last \boxed{})
    "math": ("problem", ("answer", "solution")),
}
INSTRUCTION = {  # the paper's prompt suffixes; they ask for the answer format reward.py reads
    "gsm8k": 'Let\'s think step by step and output the final answer after "####".',
    "math": "Let's think step by step and output the final answer within \\boxed{}.",
}


def load_split(task, split, data_path=""):
    """The problems of one split of a task."""
    if task == "arith":
        return [arith_problem(a, b) for a, b in arith_pairs()[split]]
    if task not in TASKS:
        die(f"unknown task {task!r}: one of {', '.join(TASKS)}")
    columns = COLUMNS["math" if task == "math_full" else task]
    ds, where = local_split(data_path, split, columns) if data_path else hub_split(task, split)
    return to_problems(ds, "math" if task == "math_full" else task, where)


# -----------------------------------------------------------------------------
# the built-in arithmetic task

def arith_problem(a, b, digits=3):
    return {"prompt": f"{a:0{digits}d}+{b:0{digits}d}=", "answer": str(a + b)}


def arith_pairs(digits=3):
    """All (a, b) pairs of the train and test splits, drawn without replacement from one seeded stream."""
    rng = random.Random(ARITH_SEED)
    pairs = rng.sample(range(10 ** (2 * digits)), ARITH_SIZES["test"] + ARITH_SIZES["train"])
    pairs = [divmod(p, 10 ** digits) for p in pairs]
    return {"test": pairs[:ARITH_SIZES["test"]], "train": pairs[ARITH_SIZES["test"]:]}


# -----------------------------------------------------------------------------
# hub and local datasets

def hub_split(task, split):
    name, config = HUB[task][split]
    hint = f"; download it and pass data_path=<a local copy> (a directory of {split}.parquet or .jsonl files)"
    ds = load_or_die(f"{name} from the Hugging Face hub", hint, name, config, split=split)
    return ds, f"{name} ({split} split)"


def local_split(data_path, split, columns):
    """columns: (the prompt column, the answer columns) of the task, whose values must be strings."""
    files = local_files(data_path, split)
    builder = {".parquet": "parquet", ".jsonl": "json"}.get(os.path.splitext(files[0])[1])
    if builder is None:
        die(f"data_path {data_path!r} must be a .parquet or .jsonl file, or a directory of them")
    check_files(files, (columns[0], *columns[1]))
    if split == "test" and os.path.isfile(data_path):  # allowed (e.g. a quick look at learning), but never silent
        print(f"warning: data_path {data_path!r} is one file, so the test split is the training problems: "
              f"test accuracy will not measure generalization", file=sys.stderr)
    if any("::" in f for f in files):
        die(f"{files[0]!r}: datasets reads '::' in a file name as a chain of URLs; rename the file or its directory")
    # the builder puts all data_files in its one split, named "train" whichever split they hold; datasets takes
    # data_files as glob patterns, so data[1].jsonl would read data1.jsonl: escaped, each names only itself
    hint = "; fix the file or download it again"
    ds = load_or_die(", ".join(files), hint, builder, data_files=[glob.escape(f) for f in files], split="train")
    return ds, f"{', '.join(files)} ({split} split)"


def local_files(data_path, split):
    """The file(s) holding one split: data_path itself if it is a file, else the first pattern that matches."""
    if not os.path.exists(portable_path("data_path", data_path)):
        die(f"data_path {data_path!r} does not exist")
    if not os.access(data_path, os.R_OK):
        die(f"data_path {data_path!r} is not readable (permission denied): make it readable, or copy the data")
    if os.path.isfile(data_path):
        return [data_path]
    for pattern in (f"{split}.parquet", f"{split}.jsonl", f"{split}-*.parquet"):
        files = sorted(glob.glob(os.path.join(glob.escape(data_path), pattern)))
        if files:
            return files
    die(f"data_path {data_path!r} has no {split}.parquet, {split}.jsonl or {split}-*.parquet")


def check_files(files, columns=()):
    """Each file readable and well-formed enough for datasets, and the split not empty: checked here, where we
    can name the file and line, because datasets reports these cases with a traceback or a message naming
    neither. A .jsonl line must be a JSON object whose `columns` hold strings where present: datasets would
    turn a column of mixed strings and numbers into numbers, blaming the wrong row."""
    rows = 0
    for path in files:
        try:
            with open(path, "rb") as f:
                raw = f.read() if path.endswith(".jsonl") else f.read(1)  # parquet: pyarrow reads its footer
        except OSError as e:
            die(f"{path} cannot be read ({e.strerror or e}): make it readable, or download it again")
        if not raw:
            die(f"{path} is empty (0 bytes): download it again, or point data_path at a copy with rows")
        if path.endswith(".jsonl"):
            try:
                text = raw.decode()
            except UnicodeDecodeError as e:
                line = raw.count(b"\n", 0, e.start) + 1
                die(f"{path} line {line} is not UTF-8 ({e.reason}): save the file as UTF-8")
            for n, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
                rows += check_line(path, n, line, columns) if line.strip() else 0
            continue
        import pyarrow.parquet  # a dependency of datasets
        try:
            rows += pyarrow.parquet.read_metadata(path).num_rows
        except (pyarrow.ArrowException, OSError, ValueError) as e:  # a truncated download, or not parquet at all
            die(f"{path} is not a readable parquet file ({type(e).__name__}: {' '.join(str(e).split())}): "
                f"download it again")
    if rows == 0:
        die(f"{', '.join(files)} has no rows: point data_path at a copy with problems in it")


def check_line(path, n, line, columns):
    """Line n of a .jsonl file: a JSON object, with strings in `columns` where present; returns 1 (a row)."""
    try:
        row = json.loads(line)
    except RecursionError:  # datasets would die of it with a traceback
        die(f"{path} line {n} is nested too deeply to read: fix the file or download it again")
    except ValueError as e:
        die(f"{path} line {n} is not JSON ({e}): fix the file or download it again")
    if not isinstance(row, dict):
        die(f"{path} line {n} is a JSON {type(row).__name__}, not an object of columns: fix the file")
    for c in columns:
        if c in row and not isinstance(row[c], str):
            die(f"{path} line {n}: {c!r} must be a string, got {type(row[c]).__name__} {row[c]!r:.60}")
    return 1


def load_or_die(what, hint, *args, **kwargs):
    """datasets.load_dataset(*args, **kwargs); a failure ends the run with one line naming `what`."""
    import datasets  # imported here: it takes seconds, and arith never needs it
    check_cache(str(datasets.config.HF_DATASETS_CACHE))
    log = logging.getLogger("datasets")  # it logs a failure before raising it: quiet, so the error stays one line
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return datasets.load_dataset(*args, **kwargs)
    except (OSError, ValueError, StopIteration, RecursionError, datasets.exceptions.DatasetsError) as e:
        while e.__cause__ is not None:  # DatasetGenerationError wraps the parser's error, which says what is wrong
            e = e.__cause__
        die(f"could not load {what}: {type(e).__name__}: {' '.join(str(e).split())}{hint}")
    finally:
        log.setLevel(level)


def check_cache(cache):
    """datasets keeps a copy of every dataset it loads, local files too, in its cache directory (under HOME by
    default): one it cannot write (a read-only HOME) fails inside load_dataset with an error that seems to be
    about the data. Checked first, and named."""
    try:
        os.makedirs(cache, exist_ok=True)
        probe = os.path.join(cache, f".write_test.{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        die(f"the datasets cache {cache} is not writable ({e.strerror or e}): datasets keeps a copy of every dataset "
            f"there, local files too; set HF_DATASETS_CACHE (or HF_HOME) to a writable directory")


def to_problems(ds, task, where):
    """The rows as problems, checked first: a bad column would otherwise surface mid-run as a KeyError."""
    q, answers = COLUMNS[task]
    a = next((c for c in answers if c in ds.column_names), " or ".join(answers))
    missing = [c for c in (q, a) if c not in ds.column_names]
    if missing:
        die(f"{where} has no column {' and '.join(missing)}; its columns: {', '.join(ds.column_names) or 'none'}")
    rows = ds.select_columns([q, a]).to_list()
    if not rows:
        die(f"{where} has no rows")
    for i, row in enumerate(rows):
        for c in (q, a):
            if not isinstance(row[c], str) or not row[c].strip():
                die(f"{where} row {i}: {c!r} must be a non-empty string, got {row[c]!r:.60}")
    return [{"prompt": f"{row[q].strip()} {INSTRUCTION[task]}", "answer": row[a]} for row in rows]


def fit_prompts(tok, task, problems, split, max_prompt_tokens, verbose=True):
    """Drop problems whose encoded prompt is longer than max_prompt_tokens, saying how many."""
    lengths = prompt_lengths(tok, task, problems, split)
    kept = [p for p, n in zip(problems, lengths) if n <= max_prompt_tokens]
    if len(kept) < len(problems) and verbose:
        print(f"{split}: dropped {len(problems) - len(kept)} of {len(problems)} prompts longer than "
              f"max_prompt_tokens={max_prompt_tokens}", file=sys.stderr)
    if not kept:
        die(f"no {split} problem fits in max_prompt_tokens={max_prompt_tokens}")
    return kept


def prompt_lengths(tok, task, problems, split):
    """Each problem's prompt length in tokens. A prompt of no tokens (a tokenizer that knows none of its
    characters drops them all: another model's, or a toy one) stops the run: the sampler needs one to start."""
    lengths = [len(encode_prompt(tok, task, p)) for p in problems]
    if 0 in lengths:
        i = lengths.index(0)
        die(f"{split} problem {i} encodes to no tokens ({problems[i]['prompt']!r:.60}): the tokenizer knows none of "
            f"its characters; use the model's own tokenizer, or a model made for this task")
    return lengths


# -----------------------------------------------------------------------------
# which problems each step trains on

TRAINED_SUBSET = 64  # a training subset this small (the multi-armed bandit view) is also evaluated on its own,
TRAINED_SAMPLES = 16  # with this many responses per problem, so that one problem still gives a curve


def task_sets(tok, task, data_path, max_prompt_tokens, train_problems, eval_problems, seed, verbose=True):
    """A run's problems: (problems: what RL trains on, eval_sets: {split: problems} each evaluation scores (whole
    splits unless eval_problems > 0; a small trained subset also on its own, as "trained": how well the
    multi-armed bandit learned its arms), longest: the longest prompt of either split in tokens)."""
    train, test = (fit_prompts(tok, task, load_split(task, s, data_path), s, max_prompt_tokens, verbose)
                   for s in ("train", "test"))
    problems = train_subset(train, train_problems, seed)
    eval_sets = dict(train=train[:eval_problems or None], test=test[:eval_problems or None])
    if 0 < train_problems <= TRAINED_SUBSET:
        eval_sets["trained"] = problems
    return problems, eval_sets, max(len(encode_prompt(tok, task, p)) for p in train + test)


def train_subset(problems, n, seed):
    """The first n problems of a seeded permutation of `problems`; n = 0: all of them, in their order.
    It depends on nothing but its arguments, and a larger n only adds problems (the subsets for growing n
    are nested), so "more data" runs train on a superset of the smaller runs' problems."""
    if n == 0:
        return problems
    if not 0 < n <= len(problems):
        die(f"train_problems={n} must be between 1 and the {len(problems)} training problems (0 = all)")
    # a stream of its own: epoch_order's permutations start from the same seed
    order = random.Random(f"train_subset {seed}").sample(range(len(problems)), len(problems))
    return [problems[i] for i in order[:n]]


def batch_indices(n_problems, batch_size, seed, step):
    """The problem indices of training step `step`: shuffled epochs, each its own seeded permutation.
    A pure function of (seed, step), so a resumed run sees exactly the same data order."""
    return [epoch_order(n_problems, seed, i // n_problems)[i % n_problems]
            for i in range(step * batch_size, (step + 1) * batch_size)]


@functools.lru_cache(maxsize=2)
def epoch_order(n_problems, seed, epoch):
    return random.Random(seed * 1_000_003 + epoch).sample(range(n_problems), n_problems)


# -----------------------------------------------------------------------------
# prompt encoding

def encode_prompt(tok, task, problem):
    """Token ids of a problem's prompt, as the policy sees it. The problem's text is plain text: a "<|im_end|>"
    or "<eos>" in a question is encoded as those characters, never as the special token (else dataset text could
    end the user's turn and forge others), as Meta's Llama 3 reference encodes message content."""
    if task == "arith":  # the tiny policy was trained on the raw prompt, no special tokens
        return tok.encode(problem["prompt"], add_special_tokens=False)
    if tok.chat_template:  # an instruct model: the prompt is one user turn, then the assistant's header
        text = problem["prompt"]
        if not any(t in text for t in special_tokens(tok)):  # the common case: the template's tokens, as always
            # return_dict=False: transformers 5 would return a BatchEncoding by default, 4.x a list either way
            return list(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False))
        # text that spells a special token: the template is rendered around a marker, and its text (with its
        # special tokens) and the problem's are encoded apart
        marker = "\x00PROMPT\x00"
        rendered = tok.apply_chat_template([{"role": "user", "content": marker}], add_generation_prompt=True,
                                           tokenize=False)
        if rendered.count(marker) != 1:
            die(f"the tokenizer's chat template renders a user message {rendered.count(marker)} times, not once: "
                f"use a model whose template holds each message once")
        before, after = rendered.split(marker)
        return (tok.encode(before, add_special_tokens=False) + plain_text(tok, text, False)
                + tok.encode(after, add_special_tokens=False))
    return plain_text(tok, problem["prompt"], True)  # a BOS where the tokenizer has one


def special_tokens(tok):
    return set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special}


def plain_text(tok, text, add_special_tokens):
    """Token ids of text with special tokens' spellings split as ordinary characters (split_special_tokens)."""
    return tok(text, add_special_tokens=add_special_tokens, split_special_tokens=True)["input_ids"]


def stop_ids(tok):
    """Token ids that end a response: EOS, plus chat templates' end-of-turn tokens when present."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    vocab = tok.get_vocab()
    ids |= {vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>") if t in vocab}
    return sorted(ids)
