"""memory.py's estimate: each term against numbers computed by hand for a tiny model, a block's saved
activations against torch's MemTracker byte for byte, the refusal of a run that cannot fit (Llama-3.2-1B at
32 x 32 on an 80 GB GPU, mocked: the check reads only config.json), the automatic evaluation batch, and the
estimate in train.py --help. All integer bytes: no float tolerance."""
import json
import os

import pytest
import torch
from torch.distributed._tools.mem_tracker import MemTracker

from machinery import checks
from machinery import memory
from machinery import flash
import train
from configurator import configure
from model import Transformer, read_hf_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULTS = {k: getattr(train, k) for k in train.config_keys}
GIB = 2 ** 30
# D = 64, I = 96, 2 layers, 4 heads of 16 (q: 64 wide), 2 KV heads (k, v: 32 wide), V = 97, tied embeddings
TINY = dict(model_type="qwen2", vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e4, tie_word_embeddings=True)
RUN = dict(DEFAULTS, dtype="bfloat16", kl_coef=0.001, batch_size=4, rollouts=2, micro_batch_size=2,
           max_new_tokens=8, eval_batch_size=3)


@pytest.mark.parametrize("hf", [TINY, dict(TINY, model_type="olmo2", tie_word_embeddings=False),
                                dict(TINY, model_type="llama", head_dim=8), *memory.PAPER_MODELS.values()])
def test_parameter_counts_equal_the_models(hf):
    with torch.device("meta"):  # shapes only: the paper models cost no memory here
        model = Transformer(hf)
    n, linear = memory.param_counts(read_hf_config(hf))
    assert n == sum(p.numel() for p in model.parameters())
    matmul = [m.weight.numel() + (m.bias.numel() if m.bias is not None else 0) for m in model.modules()
              if isinstance(m, torch.nn.Linear)]  # the head counts once when tied to the embedding
    assert linear == sum(matmul)


def test_each_term_equals_the_hand_computed_bytes():
    """TINY at 4 prompts x 2 rollouts, prompts of 8 + 8 new tokens, micro-batches of 2, bf16, KL on, on a CPU."""
    phases = memory.memory_terms(read_hf_config(TINY), RUN, "cpu", 16, 1, 3, 1)
    # params: embedding 97*64 = 6208; per block q, o 64*64 each, k, v 64*32 each, MLP 3*64*96, qkv bias 64+32+32
    # = 30848 matmul + 2*64 norm; 2 blocks and the final norm: 6208 + 2*(30848 + 128) + 64 = 68224
    # the reference's matmul weights in bf16 (2 blocks' 30848), its tied embedding and norms fp32
    assert phases["held"] == [("weights", 4 * 68224), ("reference model", 4 * 68224 - 2 * 2 * 30848),
                              ("AdamW moments", 8 * 68224), ("bf16 weight copies", 2 * (2 * 30848 + 6208))]
    assert phases["sampling"] == [("KV cache", 2 * 2 * 8 * 16 * 2 * 16 * 2),  # k, v x 2 layers x 8 rows x 16 x 2 x 16
                                  ("logits", 8 * 97 * (2 + 4 * 4)),  # bf16 logits + 4 fp32 (N, V)
                                  ("prompts' forward", 4 * 8 * (3 * 2 * 96 + 16 * 64))]
    # a block per token: 5 bf16 inputs of 64, q, k, v (k, v repeated to the 4 heads), out: 4*2*64 + 4 B x 4 heads,
    # MLP 4*2*96, norms 16*64 + 8 = 640 + 528 + 768 + 1032 = 2968 B; 2 rows x 16 tokens, 2 blocks + 1 in backward
    assert phases["update"] == [("gradients", 4 * 68224), ("activations", 32 * 3 * 2968),
                                ("head", 32 * 97 * (12 + 2) + 32 * (12 * 64 + 32)),  # one chunk of 32 tokens
                                ("head backward", 97 * 64 * (4 + 2)),  # its fp32 weight gradient, the bf16 weight
                                ("reference forward", 32 * (3 * 2 * 96 + 16 * 64) + 32 * 97 * (8 + 2))]
    assert phases["evaluation"] == [("KV cache", 2 * 2 * 3 * 16 * 2 * 16 * 2), ("logits", 3 * 97 * 18),
                                    ("prompts' forward", 3 * 8 * 1600)]
    held = 4 * 68224 * 4 - 4 * 30848 + 2 * 67904
    update = 4 * 68224 + 32 * 3 * 2968 + 32 * 97 * 14 + 32 * 800 + 97 * 64 * 6 + 32 * 1600 + 32 * 97 * 10
    assert memory.estimate(phases) == (held + update, "update")
    grad_ckpt = dict(memory.update_terms(read_hf_config(TINY), dict(RUN, grad_checkpointing=True), "cpu", 2, 16, 2))
    assert grad_ckpt["activations"] == 32 * (2 * 4 * 64 + 2 * 2968)  # each block's fp32 input, one block twice
    # on CUDA without flash-attn, a layer's SDPA inputs: the prompts' 4 x 8 tokens' mask (8 keys, bool and bf16) and
    # k, v repeated to 4 heads of 16 in bf16; a decode step's mask over 8 rows x 16; the update's masks, 2 layers
    cuda = dict(memory.sampler_terms(read_hf_config(TINY), RUN, "cuda", 4, 2, 16, 2))
    assert cuda["SDPA masks and repeated keys"] == 4 * 8 * (8 * 3 + 2 * 4 * 16 * 2) + 8 * 16 * 3
    cuda = dict(memory.update_terms(read_hf_config(TINY), RUN, "cuda", 2, 16, 2))
    assert cuda["SDPA masks"] == 2 * 16 * 16 * (1 + 2 * 2)


def test_ddp_buckets_and_a_compiled_samplers_cache_are_held():
    """Under DDP (2 ranks) each rank holds gradient buckets as large as its gradients; with compile=True the sampler's
    cache lives through the run (machinery/decode.py): the larger of the sampling (8 rows, 16 tokens) and the
    evaluation call's (3 rows: bucket 3), as held, and out of their phases."""
    cfg = read_hf_config(TINY)
    phases = memory.memory_terms(cfg, dict(RUN, batch_size=8), "cpu", 16, 2, 3, 1)
    assert ("DDP gradient buckets", 4 * 68224) in phases["held"]
    assert "DDP gradient buckets" not in dict(memory.memory_terms(cfg, RUN, "cpu", 16, 1, 3, 1)["held"])
    phases = memory.memory_terms(cfg, dict(RUN, compile=True), "cpu", 16, 1, 3, 1)
    assert phases["held"][-1] == ("KV cache, compiled decoding", 2 * 2 * 8 * 16 * 2 * 16 * 2)
    assert all("KV cache" not in dict(phases[p]) for p in ("sampling", "evaluation"))


def block_peak(hf, layers, amp, grad_checkpointing=False, rows=3, T=40):
    """Bytes alive at the peak of forward + backward beyond weights and gradients, real tensors, MemTracker."""
    torch.manual_seed(0)
    model = Transformer(dict(hf, num_hidden_layers=layers)).train()
    model.grad_checkpointing = grad_checkpointing
    tokens = torch.randint(0, hf["vocab_size"], (rows, T))
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            lp, _ = model(tokens, torch.ones_like(tokens, dtype=torch.bool))
        lp.sum().backward()
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    return sum(v for k, v in peak.items() if k != "Total" and k.value in ("Activation", "Temp", "Other"))


@pytest.mark.parametrize("amp", [True, False], ids=["bf16", "fp32"])
@pytest.mark.parametrize("hf", [dict(TINY, model_type="llama"), dict(TINY, model_type="olmo2"),
                                dict(TINY, model_type="olmo2", num_key_value_heads=4)], ids=["pre", "post", "post_mha"])
def test_a_blocks_saved_activations_are_counted_byte_for_byte(hf, amp):
    """One more block adds exactly block_bytes per token (and, under autocast, its weights' bf16 copies): what
    autograd keeps, as torch's MemTracker counts it on real tensors. The whole update is an upper bound."""
    cfg, a = read_hf_config(hf), 2 if amp else 4
    q, kv = memory.head_dims(cfg)
    copies = 2 * (2 * 64 * q + 2 * 64 * kv + 3 * 64 * 96) if amp else 0
    assert block_peak(hf, 2, amp) - block_peak(hf, 1, amp) == 3 * 40 * memory.block_bytes(cfg, a) + copies
    for ckpt in (False, True):
        c = dict(RUN, dtype="bfloat16" if amp else "float32", grad_checkpointing=ckpt)
        est = dict(memory.update_terms(cfg, c, "cpu", 3, 40, a))
        held = dict(memory.held_terms(cfg, c, train=True)).get("bf16 weight copies", 0)
        assert est["activations"] + est["head"] + held >= block_peak(hf, 2, amp, ckpt)


@pytest.fixture
def gpu_80gb(monkeypatch, tmp_path):
    """A mocked 80 GB GPU (all of it free), no flash-attn (the default install), and Llama-3.2-1B's config.json."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * GIB, 80 * GIB))
    monkeypatch.setattr(flash, "flash_attn_with_kvcache", None)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(memory.PAPER_MODELS["meta-llama/Llama-3.2-1B-Instruct"], f)
    return str(tmp_path)


def llama_config(*configs):
    return configure(DEFAULTS, [os.path.join(ROOT, "config", "paper", "llama3.2-1b_gsm8k.py")]
                     + [os.path.join(ROOT, "config", c) for c in configs])


def test_llama_at_32x32_is_refused_on_a_48gb_gpu(gpu_80gb, capsys, monkeypatch):
    """32 prompts x 32 rollouts in one sampler call: a 1024-row KV cache of 40 GiB at 256 + 1024 tokens on top of
    18.9 GiB of weights, reference, AdamW and bf16 copies (61.8 GiB: an 80 GB GPU takes it)."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (48 * GIB, 48 * GIB))
    with pytest.raises(SystemExit) as e:
        checks.check_model(gpu_80gb, llama_config("paper/rollouts_32.py"), 1, "cuda", longest_prompt=256, problems=1319)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    for word in ("48.0 GiB are free", "sampling", "KV cache 40.0", "sample_batch_size", "flash-attn"):
        assert word in err
    # the paper's 32 x 8 fits, and the estimate is printed beside the budget
    checks.check_model(gpu_80gb, llama_config("grpo_8rollouts.py"), 1, "cuda", longest_prompt=256, problems=1319)
    assert "GiB of the 48.0 GiB free on cuda: held 18.9 (weights 4.6" in capsys.readouterr().out
    # 8 prompts per sampler call (sample_batch_size) fit at 32 x 32
    c = dict(llama_config("paper/rollouts_32.py"), sample_batch_size=8)
    checks.check_model(gpu_80gb, c, 1, "cuda", longest_prompt=256, problems=1319)


def test_an_update_that_does_not_fit_names_micro_batch_size(gpu_80gb, capsys):
    c = dict(llama_config("grpo_8rollouts.py"), micro_batch_size=0, grad_checkpointing=False)  # 256 rows at once
    with pytest.raises(SystemExit):
        checks.check_model(gpu_80gb, c, 1, "cuda", longest_prompt=256, problems=1319)
    err = capsys.readouterr().err
    assert "+ update" in err and "lower micro_batch_size, or set grad_checkpointing=True" in err


def test_eval_batch_size_0_takes_as_many_prompts_as_fit(monkeypatch):
    """With TINY's numbers above: the run holds 4 * 4 * 68224 - 4 * 30848 + 2 * 67904 = 1104000 B; one prompt's
    sampler call (1 sample, 16 tokens) takes KV 4096 + logits 97 * 18 + prompts' forward 8 * 1600 = 18642 B."""
    cfg, c = read_hf_config(TINY), dict(RUN, eval_batch_size=0)
    assert memory.eval_batch_fit(cfg, c, "cpu", 16, 1, 1104000 + 3 * 18642 + 100, train=True) == 3
    assert memory.eval_batch_fit(cfg, c, "cpu", 16, 1, 1104000 + 3 * 18642 - 1, train=True) == 2
    assert memory.eval_batch_fit(cfg, c, "cpu", 16, 1, 1104000 - 1, train=True) == 0
    # evaluate.py holds only the fp32 weights and their bf16 copies
    assert memory.eval_batch_fit(cfg, c, "cpu", 16, 1, 4 * 68224 + 2 * 67904 + 18642, train=False) == 1
    path = os.path.join(ROOT, "assets", "tiny-arith")  # check_model reads its config.json: 8 + 8 tokens
    tiny = read_hf_config(json.load(open(os.path.join(path, "config.json"))))
    one = sum(b for _, b in memory.sampler_terms(tiny, c, "cpu", 1, 1, 16, 2))
    held = sum(b for _, b in memory.held_terms(tiny, c, train=True))
    monkeypatch.setattr(checks, "device_memory", lambda device: held + 10 ** 4 * one + 10)
    want = 10 ** 4
    assert checks.check_model(path, c, 1, "cpu", 8, problems=10 ** 6) == want
    assert checks.check_model(path, c, 1, "cpu", 8, problems=5) == 5  # never more than a split has
    assert checks.check_model(path, dict(c, eval_batch_size=7), 1, "cpu", 8, problems=100) == 7
    monkeypatch.setattr(checks, "device_memory", lambda device: held + one - 1)  # not even one prompt
    with pytest.raises(SystemExit) as e:
        checks.check_model(path, c, 1, "cpu", 8, problems=100)
    assert e.value.code == 2


def test_help_prints_the_memory_estimate(monkeypatch, capsys):
    """Offline, with no Hugging Face cache: the paper model's shape from memory.PAPER_MODELS."""
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as e:
        configure(DEFAULTS, [os.path.join(ROOT, "config", "paper", "qwen2.5-0.5b_gsm8k.py"), "--help"], source=train.__file__,
                  help_more=checks.memory_help)
    out = capsys.readouterr().out
    assert e.value.code == 0 and "learning_rate = 1e-06" in out  # the knobs, then the estimate
    assert "Qwen/Qwen2.5-0.5B-Instruct (its shape from memory.PAPER_MODELS), prompts of 512 + 1024 tokens" in out
    assert "held          7.6  weights 1.8, reference model 1.2, AdamW moments 3.7, bf16 weight copies 0.9" in out
    assert "no GPU here to compare with" in out
