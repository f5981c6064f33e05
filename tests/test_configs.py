"""The paper's model configs: they parse, compose with a design-choice config, and train end to end on CPU."""
import glob
import math
import os

import pytest

import data
import train
from configurator import configure
from test_data import GSM8K, LIGHTEVAL, MATH500, QWEN_TEMPLATE, char_tokenizer, quiet_private_cache, write  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = {k: getattr(train, k) for k in train.config_keys}
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "config", "*-*b_*.py")))


def test_there_are_six_model_configs():
    names = sorted(os.path.basename(c) for c in CONFIGS)
    assert names == [f"{m}_{t}.py" for m in ("llama3.2-1b", "olmo2-1b", "qwen2.5-0.5b") for t in ("gsm8k", "math")]


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_model_configs_parse_and_leave_the_design_choice_to_the_next_config(path):
    c = configure(DEFAULTS, [path])
    name = os.path.basename(path)[:-3]
    assert c["task"] == name.split("_")[1] and c["out_dir"] == f"out/{name}"
    assert c["init_from"] in ("Qwen/Qwen2.5-0.5B-Instruct", "meta-llama/Llama-3.2-1B-Instruct",
                              "allenai/OLMo-2-0425-1B-Instruct")
    assert (c["learning_rate"], c["weight_decay"], c["max_new_tokens"], c["eval_problems"]) == (1e-6, 0.01, 1024, 0)
    for k in ("batch_size", "rollouts", "advantage"):
        assert c[k] == DEFAULTS[k], k
    composed = configure(DEFAULTS, [path, os.path.join(ROOT, "config", "grpo_8rollouts.py")])
    assert (composed["rollouts"], composed["advantage"], composed["learning_rate"]) == (8, "grpo", 1e-6)
    train.check_config(composed)


@pytest.mark.slow
@pytest.mark.parametrize("family, config", [("qwen2", "qwen2.5-0.5b_gsm8k"), ("llama", "llama3.2-1b_math"),
                                            ("olmo2", "olmo2-1b_gsm8k")])
def test_a_paper_config_trains_end_to_end_on_local_files(family, config, tmp_path):
    """The GPU recipe on a CPU: a paper config + grpo_8rollouts.py with a local tiny model of the family (chat
    template included) and local data in the hub's schema; only the sizes are overridden."""
    import json

    import torch
    from conftest import tiny_hf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = char_tokenizer(QWEN_TEMPLATE)
    model_dir, _ = tiny_hf(family, tmp_path, vocab_size=len(tok))
    tok.save_pretrained(model_dir)
    if config.endswith("gsm8k"):
        write(GSM8K, str(tmp_path / "data" / "train.parquet"))
        write(GSM8K, str(tmp_path / "data" / "test.jsonl"))
    else:
        write(LIGHTEVAL * 2, str(tmp_path / "data" / "train.parquet"))
        write(MATH500 * 2, str(tmp_path / "data" / "test.parquet"))
    out = tmp_path / "out"
    args = [os.path.join(ROOT, "config", f"{config}.py"), os.path.join(ROOT, "config", "grpo_8rollouts.py"),
            f"--init_from={model_dir}", f"--data_path={tmp_path / 'data'}", f"--out_dir={out}", "--device=cpu",
            "--batch_size=2", "--max_steps=2", "--eval_interval=2", "--max_new_tokens=12", "--eval_batch_size=2"]
    train.__dict__.update(configure(DEFAULTS, args))
    assert train.grad_checkpointing and train.dtype == "bfloat16" and train.micro_batch_size == 8
    train.main()
    log = [json.loads(line) for line in open(out / "log.jsonl")]
    assert [line["step"] for line in log] == [0, 1, 2] and "test_pass@1" in log[-1]
    assert all(math.isfinite(line["loss"]) for line in log[1:]) and log[1]["response_len"] > 0
    hf = AutoModelForCausalLM.from_pretrained(str(out / "ckpt"))  # an HF directory, tokenizer and template too
    assert AutoTokenizer.from_pretrained(str(out / "ckpt")).chat_template == QWEN_TEMPLATE
    ids = torch.tensor([data.encode_prompt(tok, train.task, data.load_split(train.task, "test", train.data_path)[0])])
    with torch.no_grad():
        assert torch.isfinite(hf(ids).logits).all()
