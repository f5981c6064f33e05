"""
Tasks and their splits, as lists of {"prompt": str, "answer": str}, and the prompt encoding.

- arith: the built-in task, 3-digit addition with zero-padded operands ("007+123=" -> "130"),
  generated from a seed; its splits are disjoint and never depend on the training seed.
"""
import functools
import random

ARITH_SEED = 1234  # fixes the arithmetic splits; the base policy in assets/tiny-arith was made on them
ARITH_SIZES = {"train": 2000, "test": 500}


def arith_problem(a, b, digits=3):
    return {"prompt": f"{a:0{digits}d}+{b:0{digits}d}=", "answer": str(a + b)}


def arith_pairs(digits=3):
    """All (a, b) pairs of the train and test splits, drawn without replacement from one seeded stream."""
    rng = random.Random(ARITH_SEED)
    pairs = rng.sample(range(10 ** (2 * digits)), ARITH_SIZES["test"] + ARITH_SIZES["train"])
    pairs = [divmod(p, 10 ** digits) for p in pairs]
    return {"test": pairs[:ARITH_SIZES["test"]], "train": pairs[ARITH_SIZES["test"]:]}


def load_split(task, split, data_path=""):
    """The problems of one split of a task."""
    if task == "arith":
        return [arith_problem(a, b) for a, b in arith_pairs()[split]]
    raise ValueError(f"unknown task {task!r}")


def encode_prompt(tok, task, problem):
    """Token ids of a problem's prompt, as the policy sees it."""
    return tok.encode(problem["prompt"], add_special_tokens=False)


@functools.lru_cache(maxsize=2)
def epoch_order(n_problems, seed, epoch):
    return random.Random(seed * 1_000_003 + epoch).sample(range(n_problems), n_problems)


def batch_indices(n_problems, batch_size, seed, step):
    """The problem indices of training step `step`: shuffled epochs, each its own seeded permutation.
    A pure function of (seed, step), so a resumed run sees exactly the same data order."""
    return [epoch_order(n_problems, seed, i // n_problems)[i % n_problems]
            for i in range(step * batch_size, (step + 1) * batch_size)]


def stop_ids(tok):
    """Token ids that end a response: EOS, plus chat templates' end-of-turn tokens when present."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    vocab = tok.get_vocab()
    ids |= {vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>") if t in vocab}
    return sorted(ids)
