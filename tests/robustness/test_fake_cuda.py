"""The fake CUDA device of tests/fake_cuda.py keeps a GPU's device rules on a CPU, and the faults it found in the
GPU path stay fixed: micro-batch indices, advantages and the KL reward on the rows' device, checkpoints read to
the CPU, and a sampler that asks the host to wait at most every rollout.SYNC_EVERY tokens."""
import math
import os
import zipfile

import pytest
import torch

import data
from machinery import distributed as ddp
import rollout
import train
from conftest import U32, tiny_hf
from configurator import configure
from model import Transformer
from rollout import generate

DEFAULTS = {k: getattr(train, k) for k in train.config_keys}
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MIXED = "Expected all tensors to be on the same device"


# -----------------------------------------------------------------------------
# the harness: each rule of a GPU it keeps

def test_cuda_tensors_say_cuda_and_cpu_ones_come_back_plain(fake_cuda):
    x = torch.zeros(2, 3, device="cuda")
    assert x.device == torch.device("cuda:0") and x.is_cuda and isinstance(x, fake_cuda.FakeCudaTensor)
    for made in (torch.ones(3).to("cuda"), torch.ones(3).cuda(), torch.ones(3).to(x), torch.arange(3, device=0),
                 torch.zeros_like(x), torch.full((2,), 1.0, device=torch.device("cuda", 0))):
        assert made.is_cuda, made
    for back in (x.cpu(), x.to("cpu"), torch.empty_like(x, device="cpu")):
        assert type(back) is torch.Tensor and back.device.type == "cpu" and not back.is_cuda
    cpu = torch.ones(3)
    moved = cpu.to("cuda")
    moved += 1  # a host-to-device copy: the CPU tensor is untouched
    assert cpu.tolist() == [1.0, 1.0, 1.0]
    assert x.to(torch.float64).is_cuda and x.to(torch.float64).dtype == torch.float64


def test_mixing_with_a_cpu_tensor_fails_as_on_a_gpu(fake_cuda):
    x = torch.ones(3, device="cuda")
    for mix in (lambda: x + torch.ones(3), lambda: torch.ones(3) * x, lambda: torch.cat([x, torch.ones(3)]),
                lambda: torch.where(torch.ones(3, dtype=torch.bool), x, torch.zeros(3))):
        with pytest.raises(RuntimeError, match=MIXED):
            mix()
    mixed = x * torch.tensor(2.0)  # a 0-dim CPU tensor is a scalar: it mixes, as on a GPU
    assert mixed.is_cuda and mixed.tolist() == [2.0, 2.0, 2.0]


def test_cpu_indices_index_cuda_tensors_but_not_the_reverse(fake_cuda):
    x = torch.arange(5.0, device="cuda")
    picked = x[torch.tensor([4, 0])]
    assert picked.is_cuda and picked.tolist() == [4.0, 0.0]
    assert x[torch.tensor([True, False, True, False, False])].tolist() == [0.0, 2.0]
    with pytest.raises(IndexError, match="indices should be either on cpu or on the same device"):
        torch.arange(5)[torch.tensor([1], device="cuda")]
    x[1:3] = torch.tensor([7.0, 8.0])  # a slice assignment is a copy: any device
    assert x.tolist() == [0.0, 7.0, 8.0, 3.0, 4.0]
    with pytest.raises(RuntimeError, match=MIXED):  # index_put_ wants its values on the tensor's device
        x[torch.tensor([0, 1])] = torch.tensor([1.0, 2.0])


def test_shape_only_calls_do_not_mix_and_follow_self(fake_cuda):
    x, cpu = torch.ones(2, 3, device="cuda"), torch.ones(1, 3)
    assert type(cpu.expand_as(x)) is torch.Tensor and not cpu.expand_as(x).is_cuda
    assert x.view_as(torch.ones(3, 2)).is_cuda and x.view_as(torch.ones(3, 2)).shape == (3, 2)
    assert torch.ones(6).reshape_as(x).device.type == "cpu"


def test_modules_grads_and_optimizer_state_live_on_cuda(fake_cuda):
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2).to("cuda")
    assert all(isinstance(p, torch.nn.Parameter) and p.is_cuda for p in m.parameters())
    m(torch.randn(4, 3, device="cuda")).sum().backward()
    assert m.weight.grad.is_cuda and m.weight.data.is_cuda  # attribute reads of a fake are fake
    opt = torch.optim.AdamW(m.parameters())
    opt.step()
    assert opt.state[m.weight]["exp_avg"].is_cuda
    assert not m.cpu().weight.is_cuda
    tied = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    tied[1].weight = tied[0].weight  # Qwen2's and Llama's head is their embedding: it stays one parameter
    assert tied.to("cuda")[1].weight is tied[0].weight and tied[0].weight.is_cuda


def test_cuda_functions_and_autocast_are_stood_in_for(fake_cuda):
    assert torch.cuda.is_available() and torch.cuda.device_count() == 1
    assert torch.cuda.mem_get_info("cuda:0")[1] == fake_cuda.MEMORY and torch.cuda.max_memory_allocated() == 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats("cuda")
    a = torch.randn(2, 4, device="cuda")
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):  # CPU autocast underneath: a bf16 matmul
        assert torch.is_autocast_enabled("cuda") and (a @ a.t()).dtype == torch.bfloat16
    assert (a @ a.t()).dtype == torch.float32 and not torch.is_autocast_enabled("cuda")


def test_host_syncs_are_counted_on_cuda_tensors_only(fake_cuda):
    x = torch.arange(4, device="cuda")
    bool(x.any()), x[0].item(), x.tolist(), int(x[1]), x.nonzero(), x.cpu()
    cpu = torch.arange(4)
    bool(cpu.any()), cpu.tolist()
    assert sum(fake_cuda.syncs.values()) == 6
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
        x.numpy()


@pytest.mark.parametrize("family", ["qwen2", "olmo2"])
def test_gradient_checkpointing_recomputes_on_cuda_to_the_cpu_gradients(family, tmp_path, fake_cuda):
    """The recompute in backward runs on the fake inputs it saved; the gradients are the CPU run's exactly (the
    same CPU kernels in the same order)."""
    path, _ = tiny_hf(family, tmp_path)
    tokens = torch.randint(1, 61, (3, 9), generator=torch.Generator().manual_seed(0))
    valid = torch.ones(3, 9, dtype=torch.bool)
    valid[0, :4] = False  # a left-padded row
    grads = []
    for device in ("cpu", "cuda"):
        model = Transformer.from_pretrained(path, device=device).train()
        model.grad_checkpointing = True
        with torch.autocast(device, dtype=torch.bfloat16):
            lp, _ = model(tokens.to(device), valid.to(device))
        lp.sum().backward()
        grads.append([p.grad.cpu() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_torch_save_writes_plain_tensors_tagged_cuda(fake_cuda, tmp_path):
    x = torch.arange(3.0, device="cuda")
    torch.save(dict(x=x, plain=torch.ones(2)), tmp_path / "state.pt")
    with zipfile.ZipFile(tmp_path / "state.pt") as z:
        pickled = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"fake_cuda" not in pickled and b"cuda:0" in pickled and b"cpu" in pickled
    loaded = torch.load(tmp_path / "state.pt", weights_only=True, map_location="cpu")
    assert type(loaded["x"]) is torch.Tensor and loaded["x"].tolist() == [0.0, 1.0, 2.0]
    assert not fake_cuda.cuda_loads
    torch.load(tmp_path / "state.pt", weights_only=True)  # no map_location: what a GPU would put on cuda:0
    assert fake_cuda.cuda_loads["cuda:0"] == 3 * 4


def test_a_cuda_tagged_file_needs_map_location_on_a_cpu_machine(tmp_path):
    """Outside the fake device the file is what a GPU run writes: torch.load without map_location refuses it
    on a machine without CUDA (the fault of checkpoint.py that map_location="cpu" fixes)."""
    import fake_cuda
    with fake_cuda.fake_cuda():
        torch.save(dict(x=torch.ones(2, device="cuda")), tmp_path / "state.pt")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="Attempting to deserialize object on a CUDA device"):
            torch.load(tmp_path / "state.pt", weights_only=True)
    assert torch.load(tmp_path / "state.pt", weights_only=True, map_location="cpu")["x"].tolist() == [1.0, 1.0]


def bf16(*shape, offset=0):
    """A random bf16 tensor of this shape whose storage starts `offset` elements in."""
    n = math.prod(shape)
    return torch.randn(n + offset).bfloat16()[offset:].view(shape)


def test_each_attention_call_is_put_on_the_kernel_cuda_would_pick(fake_cuda):
    """PyTorch's rules, one broken at a time: flash takes no mask and no fp32, the memory-efficient kernel no
    grouped-query heads, neither a head dim that is not a multiple of 8 (in half precision) or misaligned data;
    what neither takes runs in the math kernel, which sdpa_kernel can exclude (then no kernel: an error)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    pick = lambda *a, **kw: fake_cuda.sdpa_backend(*a, **kw)[0]
    q, kv, grouped = bf16(2, 4, 5, 8), bf16(2, 4, 5, 8), bf16(2, 2, 5, 8)
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    assert pick(q, kv, kv, is_causal=True) == pick(q, grouped, grouped, is_causal=True, enable_gqa=True) == "flash"
    assert pick(q, kv, kv, attn_mask=mask) == pick(q.float(), kv.float(), kv.float()) == "efficient"
    assert pick(q[:, :, :2], kv, kv, is_causal=True) == "efficient"  # causal, fewer queries than keys
    assert pick(q, grouped, grouped, attn_mask=mask, enable_gqa=True) == "math"  # masked GQA: the math kernel
    odd = bf16(2, 4, 5, 12)
    assert pick(odd, odd, odd, attn_mask=mask) == "math"  # head dim 12
    assert pick(bf16(2, 4, 5, 8, offset=4), kv, kv, attn_mask=mask) == "math"  # data 4 elements off alignment
    assert pick(q, kv, kv, attn_mask=mask.expand(2, 1, 5, 5).transpose(-1, -2).contiguous().mT) == "math"
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        assert pick(q, kv, kv, attn_mask=mask) == "efficient"
        with pytest.raises(RuntimeError, match="No available kernel"):
            pick(q, grouped, grouped, attn_mask=mask, enable_gqa=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):  # autocast computes fp32 inputs in bf16
        assert pick(q.float(), kv.float(), kv.float(), is_causal=True) == "flash"
    with pytest.raises(RuntimeError, match="same dtype"):
        pick(q, kv.float(), kv)
    # called on cuda tensors: counted, computed as on the CPU, and an error on the math kernel in half precision
    q, kv, grouped, mask = (x.to("cuda") for x in (q, kv, grouped, mask))
    y = torch.nn.functional.scaled_dot_product_attention(q, kv, kv, attn_mask=mask)
    assert y.is_cuda and torch.equal(y.cpu(), torch.nn.functional.scaled_dot_product_attention(
        q.cpu(), kv.cpu(), kv.cpu(), attn_mask=mask.cpu()))
    with pytest.raises(RuntimeError, match="would run the math kernel"):
        torch.nn.functional.scaled_dot_product_attention(q, grouped, grouped, attn_mask=mask, enable_gqa=True)
    assert fake_cuda.sdpa_calls == {"efficient": 1, "math": 1}


def test_torch_compile_is_stood_in_for_and_its_settings_kept(fake_cuda):
    """dynamo cannot trace the fake tensors: on the fake device torch.compile returns the function as it is."""
    f = lambda x: x + 1
    assert torch.compile(f, fullgraph=True) is f and torch.compile(fullgraph=False)(f) is f
    assert fake_cuda.compiles == [dict(fullgraph=True), dict(fullgraph=False)]


def test_the_fake_device_is_gone_after_the_test():
    assert isinstance(torch.autocast("cpu"), torch.amp.autocast_mode.autocast)
    assert torch.save.__module__ == "torch.serialization"
    assert torch.compile.__module__ == "torch"
    assert not torch.__future__.get_swap_module_params_on_conversion()
    if not torch.cuda.is_available():  # on a machine with a GPU the real one answers
        assert torch.cuda.device_count() == 0


# -----------------------------------------------------------------------------
# the GPU path's faults it found (each test fails on the code before the fix)

def test_micro_batch_indices_follow_the_rows_they_index(fake_cuda):
    """distributed.micro_batches indexed the CPU minibatch ids with a cuda argsort (bug 1)."""
    valid = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1]], dtype=torch.bool)
    ids = torch.tensor([3, 0, 2, 1])  # minibatch_rows' ids are CPU tensors
    want = ddp.micro_batches(ids, valid, 2)
    got = ddp.micro_batches(ids, valid.to("cuda"), 2)
    assert [(i.tolist(), c) for i, c in got] == [(i.tolist(), c) for i, c in want] == \
        [([2, 3], slice(2, 4)), ([0, 1], slice(0, 4))]


def arith_step(tmp_path, *argv):
    """train.sample_step's first draw on the tiny policy on cuda with these settings: (rows, metrics)."""
    from transformers import AutoTokenizer
    path = os.path.join(ROOT, "assets", "tiny-arith")
    train.__dict__.update(configure(DEFAULTS, [f"--out_dir={tmp_path}", "--batch_size=4", "--device=cuda", *argv]))
    policy = Transformer.from_pretrained(path, device="cuda")
    ref = Transformer.from_pretrained(path, device="cuda").requires_grad_(False) if train.kl_coef else None
    problems = data.load_split("arith", "train")
    state = dict(replay={}, solved=[], regret=0)
    rows, metrics, _ = train.sample_step(policy, ref, AutoTokenizer.from_pretrained(path), problems, 0, state)
    return policy, ref, rows, metrics


def test_advantages_move_with_their_rows_and_the_update_runs(tmp_path, fake_cuda):
    """The advantages were made on the CPU and never moved, so the loss mixed devices (bug 2)."""
    policy, ref, rows, _ = arith_step(tmp_path, "--rollouts=2", "--advantage=grpo")
    assert all(v.is_cuda for v in rows.values()), {k: v.device for k, v in rows.items()}
    rows = ddp.select_rows([rows], 8)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    stats = train.update(policy, ref, opt, rows)
    assert math.isfinite(stats["loss"]) and stats["grad_norm"] > 0


@pytest.mark.parametrize("argv", [["--kl_coef=0.1"], ["--minibatches=2", "--policy_loss=cispo"]], ids=str)
def test_the_update_reads_its_numbers_once_not_per_micro_batch(argv, tmp_path, fake_cuda):
    """The loss, KL, ratio, entropy and clip fraction stay on the device until the update ends: the .item()
    count does not grow with the number of micro-batches (1 row each vs all 8 in one), and the stats agree."""
    items, stats = {}, {}
    for micro in (0, 1):
        train.__dict__.update(configure(DEFAULTS, [f"--out_dir={tmp_path}", "--device=cuda"]))  # a fresh policy
        policy, ref, rows, _ = arith_step(tmp_path, "--rollouts=2", "--advantage=grpo",
                                          f"--micro_batch_size={micro}", *argv)
        rows = ddp.select_rows([rows], 8)
        fake_cuda.syncs.clear()
        stats[micro] = train.update(policy, ref, torch.optim.SGD(policy.parameters(), lr=0.0), rows)
        items[micro] = fake_cuda.syncs["item"]
    assert items[1] == items[0], items
    # the same rows in other batches, and the sampler's cached decode, give each token's log-prob to float32
    # rounding: reordered float32 sums move a result by a few units of roundoff (U32) times the size of its terms
    # (Higham 2002, section 4.2), compounded over 4 blocks and the head: 64 U32 of the logits' size (measured:
    # under 6 U32 on AVX-512, AVX2 and ATEN_CPU_CAPABILITY=default)
    per_token = 64 * U32 * logit_size(policy)  # ~5e-5
    assert stats[1].keys() == stats[0].keys() and {"loss", "ratio", "entropy", "clipfrac"} <= stats[0].keys()
    # rounding noise, bounded absolutely in each run: the largest |sum of a response's log-ratios| sums at most
    # max_new_tokens of them; k3 is log r ** 2 / 2 per token; no ratio leaves the band
    noise = dict(mismatch_max=train.max_new_tokens * per_token, mismatch_kl=per_token ** 2, mismatch_frac=0.0)
    for k, bound in noise.items():
        assert stats[0][k] <= bound and stats[1][k] <= bound, (k, stats[0][k], stats[1][k], bound)
    # the rest are stable values: token means of terms whose slope in a token's log-prob is at most about 1 or
    # twice their size (the advantages are at most 1 in size with 2 rollouts, the ratio is e^0, the entropy moves
    # by up to twice itself times a logit's error), and the gradient's norm, which moves relative to itself as the
    # log-probs do: 4 times the per-token bound, relative to the stat's size above 1
    for k in stats[0].keys() - noise.keys():
        assert abs(stats[1][k] - stats[0][k]) <= 4 * per_token * max(1.0, abs(stats[0][k])), k


def logit_size(model):
    """An upper bound on a logit's size: RMSNorm's output has norm at most sqrt(D) before its gain g, and the
    tied head dots it with a row w_v of the embedding, so |z_v| <= sqrt(D) * |g * w_v| (Cauchy-Schwarz)."""
    params = dict(model.named_parameters())
    g, head = params["model.norm.weight"], params["model.embed_tokens.weight"]
    return (g.numel() ** 0.5 * (g * head).norm(dim=1).max()).item()


def test_kl_in_the_reward_is_summed_on_the_device_and_subtracted_on_the_cpu(tmp_path, fake_cuda):
    """rewards (CPU) -= kl_coef * the rows' KL (cuda) mixed devices (bug 3)."""
    _, _, rows, metrics = arith_step(tmp_path, "--rollouts=2", "--advantage=grpo", "--kl_coef=0.5",
                                     "--kl_in_reward=True")
    assert rows["advantages"].is_cuda and math.isfinite(metrics["reward"])


def test_the_sampler_waits_for_the_device_at_most_every_sync_every_tokens(tmp_path, fake_cuda):
    """A decode step asks the host nothing (item 7): syncs grow by one per SYNC_EVERY tokens, not by one or
    two per token; the outputs are the CPU sampler's exactly."""
    path, _ = tiny_hf("llama", tmp_path)
    prompts = [[5, 6, 7, 8], [9, 10]]  # left-padded: the padded path is the one that checked every token
    out = {}
    for device in ("cpu", "cuda"):
        model = Transformer.from_pretrained(path, device=device)
        for T in (rollout.SYNC_EVERY, 4 * rollout.SYNC_EVERY):
            fake_cuda.syncs.clear()
            out[device, T] = generate(model, prompts, 2, T, generator=torch.Generator().manual_seed(0))
            if device == "cuda":
                out["syncs", T] = sum(fake_cuda.syncs.values())
    assert out["syncs", 4 * rollout.SYNC_EVERY] - out["syncs", rollout.SYNC_EVERY] <= 3
    for T in (rollout.SYNC_EVERY, 4 * rollout.SYNC_EVERY):
        for a, b in zip(out["cpu", T], out["cuda", T]):
            assert torch.equal(a, b.cpu())


def test_the_sampler_stops_early_on_the_device_with_the_same_outputs(tmp_path, fake_cuda):
    """Checking every SYNC_EVERY tokens still stops a call whose rows all ended (and trims it as before)."""
    path, _ = tiny_hf("qwen2", tmp_path)
    stops = list(range(0, 61, 4))
    got = []
    for device in ("cpu", "cuda"):
        model = Transformer.from_pretrained(path, device=device)
        got.append(generate(model, [[1, 2, 3], [4]], 4, 200, temperature=1.5, eos_id=stops,
                            generator=torch.Generator().manual_seed(2)))
    assert got[1].finished.all() and got[1].tokens.size(1) < 3 + rollout.SYNC_EVERY
    assert all(torch.equal(a, b.cpu()) for a, b in zip(*got))
    assert sum(fake_cuda.syncs.values()) <= 200 // rollout.SYNC_EVERY


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compile"])
@pytest.mark.parametrize("family, kv_heads", [("qwen2", 2), ("olmo2", 4)], ids=["gqa", "mha"])
def test_no_attention_call_runs_the_math_kernel_in_bf16(family, kv_heads, compile, tmp_path, fake_cuda):
    """A bf16 run on cuda, prompts of unequal length (masks everywhere), grouped-query heads or not: the prefill,
    every decode step, and the update's forward (shared prompts, then whole rows) each run every layer's
    attention in a fused kernel (the fake device raises on a math one: enable_gqa with a mask took it)."""
    path, _ = tiny_hf(family, tmp_path, num_key_value_heads=kv_heads)
    model = Transformer.from_pretrained(path, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ro = generate(model, [[5, 6, 7, 8, 9], [10, 11], [12]], 3, 6, generator=torch.Generator().manual_seed(0),
                      compile=compile)
        shared, _ = model(ro.tokens, ro.valid, ro.mask)
        whole, _ = model(ro.tokens, ro.valid)
    (shared.sum() + whole.sum()).backward()
    layers = model.cfg["n_layer"]  # prefill, 5 decode steps, the prompts' and responses' passes, whole rows
    assert sum(fake_cuda.sdpa_calls.values()) == layers * (1 + 5 + 2 + 1) and not fake_cuda.sdpa_calls["math"]
    if compile:  # what a GPU compiles: the decode step, whole, static shapes, CUDA graphs
        assert fake_cuda.compiles == [dict(fullgraph=True, dynamic=False, mode="reduce-overhead",
                                           recompile_limit=64)]
