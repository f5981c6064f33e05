import json
import os
import re
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")
# the reading path (the root), the tools, and the test modules that other tests' files import, by their plain names
for path in (os.path.join(TESTS, "robustness"), TESTS, os.path.join(ROOT, "tools"), ROOT):
    sys.path.insert(0, path)
U32 = 2.0 ** -24  # float32's unit roundoff


def pytest_addoption(parser):
    # float sums split across threads add in another order: CI runs the numerics tests at 1 and at 2 threads
    parser.addoption("--torch-threads", type=int, default=1, help="torch.set_num_threads for the tests (default 1)")
    # python tools/exercises.py check NAME: the exercise being checked, and where to write each test's record
    parser.addoption("--exercise", default="", help="a test stopped by another exercise's raise is skipped as "
                                                   "blocked by it (python tools/exercises.py check)")
    parser.addoption("--exercise-report", default="", help="write each test's record to this JSON file")


def pytest_configure(config):
    torch.set_num_threads(config.getoption("torch_threads"))


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same global random state, whatever ran before it (a test that draws with
    torch.randint(...) sees the same numbers run alone, after other tests, or selected by -k)."""
    torch.manual_seed(0)


def assert_close_sums(got, want, n):
    """got and want: the same float32 tensor computed with its sums in another order (chunks, threads,
    recomputation). Reordering a float32 sum of n terms moves it by at most n * U32 * sum|terms| (Higham,
    Accuracy and Stability of Numerical Algorithms, 2002, section 4.2); the tensor's largest entry stands for the
    size of its terms. So the tolerance is n * U32 * max|want|, n the number of terms behind an entry; a bug (a
    token missed or counted twice at a chunk boundary) moves an entry by that token's share, far above it."""
    torch.testing.assert_close(got, want, atol=n * U32 * want.abs().max().item(), rtol=0)


def tiny_hf(family, tmp_path, **kw):
    """A random tiny transformers model of a family, saved to tmp_path; returns (path, hf_model)."""
    import transformers as tf
    common = dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6)
    common.update(kw)
    if family == "qwen2":
        cfg = tf.Qwen2Config(tie_word_embeddings=True, **common)
        cls = tf.Qwen2ForCausalLM
    elif family == "llama":
        cfg = tf.LlamaConfig(tie_word_embeddings=True, rope_scaling=dict(
            rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=16), rope_theta=500000.0, **common)
        cls = tf.LlamaForCausalLM
    else:
        cfg = tf.Olmo2Config(tie_word_embeddings=False, **common)
        cls = tf.Olmo2ForCausalLM
    torch.manual_seed(0)
    m = cls(cfg).eval()
    with torch.no_grad():  # HF zero-inits some biases; make every parameter matter
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = str(tmp_path / family)
    m.save_pretrained(path)
    return path, m


@pytest.fixture
def arith():
    """The committed tiny arithmetic policy and its tokenizer."""
    from transformers import AutoTokenizer
    from model import Transformer
    path = os.path.join(ROOT, "assets", "tiny-arith")
    return Transformer.from_pretrained(path), AutoTokenizer.from_pretrained(path)


@pytest.fixture
def fake_cuda():
    """The fake CUDA device of tests/robustness/fake_cuda.py for one test: device="cuda" runs on the CPU under a GPU's
    device rules; yields the module (its syncs and cuda_loads counters start at zero)."""
    import fake_cuda as module
    with module.fake_cuda():
        yield module


# -----------------------------------------------------------------------------
# python tools/exercises.py check NAME runs NAME's tests with --exercise=NAME and reads the records these hooks write


RECORDS = {}  # test id -> its record, written to --exercise-report when pytest finishes


def failure(config, excinfo, text):
    """The record of a failed test: the exception's type, where it was raised (the deepest frame in the repo, so
    the student's line rather than torch's) and pytest's report (the test's source with its comments and
    parametrized cases, up to the failing line, and the values)."""
    if excinfo is None:  # failed without an exception of its own (a strict xfail that passed)
        return dict(outcome="failed", error="Failed", at="", text=text)
    root = str(config.rootpath)
    error = (excinfo.value.__cause__ or excinfo.value) if excinfo.typename == "CollectError" else excinfo.value
    if isinstance(error, SyntaxError):
        at = f"{os.path.relpath(error.filename or '?', root)}:{error.lineno}"
    else:
        frames = [e for e in excinfo.traceback if str(e.path).startswith(root + os.sep)] or list(excinfo.traceback)
        at = f"{os.path.relpath(str(frames[-1].path), root)}:{frames[-1].lineno + 1}"
    return dict(outcome="failed", error=type(error).__name__, at=at, text=text)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    record = RECORDS.setdefault(item.nodeid, dict(test=item.nodeid, outcome="passed"))
    raised = call.excinfo is not None and call.excinfo.errisinstance(NotImplementedError) and \
        re.match(r"exercise (\w+): ", str(call.excinfo.value))
    checking = item.config.getoption("exercise")
    if raised and checking and raised[1] != checking:  # another exercise's raise: this test can't judge ours yet
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"blocked by exercise {raised[1]}, "
                                                                   f"still stripped in this copy")
        record.update(outcome="skipped", blocked_by=raised[1])
    elif report.skipped and record["outcome"] == "passed":
        record["outcome"] = "skipped"
    elif report.failed and record["outcome"] != "failed":
        record.update(failure(item.config, call.excinfo, report.longreprtext), todo=bool(raised))
    return report


def pytest_exception_interact(node, call, report):
    if report.when == "collect":  # a test file that does not import: e.g. a syntax error in the student's code
        RECORDS[node.nodeid] = dict(test=node.nodeid, **failure(node.config, call.excinfo, report.longreprtext))


def pytest_sessionfinish(session):
    if session.config.getoption("exercise_report"):
        with open(session.config.getoption("exercise_report"), "w", encoding="utf-8") as fh:
            json.dump(list(RECORDS.values()), fh)
