"""
The memory estimate: what a run holds, term by term, before anything is allocated. checks.check_fit compares it
with the device's memory, so that a run that cannot fit ends in one line before the model loads, and train.py
--help prints it (checks.memory_help). Every sequence counts as long as the longest: an upper bound.
tests/robustness/test_memory.py checks each term by hand and a block's saved tensors against torch's MemTracker.
"""
import torch

from machinery import flash
from machinery.decode import bucket
from machinery.head import LOGIT_CHUNK
from model import kv_cache_bytes

GIB = 2 ** 30


def memory_terms(cfg, c, device, seq_len, world, eval_prompts, samples):
    """A run's memory in bytes, term by term: {phase: [(term, bytes)]}. "held" lives through the whole run; the
    phases "sampling", "update" and "evaluation" come one at a time. cfg: model.read_hf_config's numbers; c: the
    config; seq_len: the longest prompt + max_new_tokens (every sequence is counted that long: an upper bound);
    world: ranks (None: an evaluation alone, evaluate.py); eval_prompts x samples: an evaluation's sampler call."""
    a = 2 if c["dtype"] == "bfloat16" else 4  # bytes per activation: bf16 under autocast (matmul outputs), else fp32
    phases = dict(held=held_terms(cfg, c, bool(world), world or 1))
    if world:
        per_rank = c["batch_size"] // world
        phases["sampling"] = sampler_terms(cfg, c, device, min(c["sample_batch_size"] or per_rank, per_rank),
                                           c["rollouts"] + c["extra_rollouts"], seq_len, a)
        rows = c["micro_batch_size"] or per_rank * c["rollouts"] // c["minibatches"]  # sequences per backward
        phases["update"] = [("gradients", 4 * param_counts(cfg)[0])] + update_terms(cfg, c, device, rows, seq_len, a)
    if eval_prompts:
        phases["evaluation"] = sampler_terms(cfg, c, device, eval_prompts, samples, seq_len, a)
    caches = [b for p in ("sampling", "evaluation") for term, b in phases.get(p, ()) if term == "KV cache"]
    if c["compile"] and caches:  # compiled decoding holds its cache for the run (machinery/decode.py): the
        phases = {p: [t for t in terms if t[0] != "KV cache"] for p, terms in phases.items()}  # largest call's
        phases["held"].append(("KV cache, compiled decoding", max(caches)))
    return phases


def held_terms(cfg, c, train, world=1):
    """What lives through the whole run (train: train.py's, else evaluate.py's; world: ranks): [(term, bytes)]."""
    n, linear = param_counts(cfg)
    held = [("weights", 4 * n)]  # fp32 (Transformer.from_pretrained): autocast computes from them
    if train and c["kl_coef"] > 0:  # train.py's frozen copy of the initial policy: its matmuls' weights in the
        # autocast dtype (precision.frozen_reference; the tied head stays the fp32 embedding), the rest fp32
        low = linear - (cfg["vocab_size"] * cfg["hidden_size"] if cfg["tie_word_embeddings"] else 0)
        held.append(("reference model", 4 * n - (0 if c["dtype"] == "float32" else 2 * low)))
    if train:
        held.append(("AdamW moments", 8 * n))  # exp_avg and exp_avg_sq, fp32, from the first optimizer step on
    if train and world > 1:  # DDP all-reduces gradients through its own flat buckets, as large as the gradients
        held.append(("DDP gradient buckets", 4 * n))
    if train and c["staleness"]:  # the sampler's K older policies, fp32 (machinery/stale.py)
        held.append(("policy snapshots", 4 * n * c["staleness"]))
    if c["dtype"] == "bfloat16":  # autocast's cache: a bf16 copy of each weight a matmul reads (the update saves
        held.append(("bf16 weight copies", 2 * linear))  # them for backward)
    return held


def param_counts(cfg):
    """(parameters, those a matmul reads: the weights autocast copies to bf16) of a model with cfg's numbers."""
    D, I, V, q, kv = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], *head_dims(cfg)
    linear = 2 * D * q + 2 * D * kv + 3 * D * I + (q + 2 * kv if cfg["qkv_bias"] else 0)  # per block
    norms = 2 * D + (q + kv if cfg["qk_norm"] else 0)  # per block
    embeddings = V * D * (1 if cfg["tie_word_embeddings"] else 2)
    return embeddings + cfg["n_layer"] * (linear + norms) + D, cfg["n_layer"] * linear + V * D  # + the head


def sampler_terms(cfg, c, device, prompts, n, seq_len, a):
    """One sampler call (rollout.generate) of n responses to each of `prompts` prompts: [(term, bytes)]."""
    N, P, V = prompts * n, seq_len - c["max_new_tokens"], cfg["vocab_size"]
    D, I, H, hd = cfg["hidden_size"], cfg["intermediate_size"], cfg["n_head"], cfg["head_dim"]
    # rollout.sample: the model's (N, V) logits, then four fp32 (N, V) at once (scaled, log_softmax, softmax, its
    # cumsum); top-k masks a copy (4 B); top-p sorts (values, int64 indices), softmaxes, sums, masks (26 B)
    per_logit = a + 16 + (4 if c["top_k"] else 0) + (26 if c["top_p"] < 1 else 0)
    rows, length = (bucket(N), bucket(seq_len)) if c["compile"] else (N, seq_len)  # machinery/decode.py's
    terms = [("KV cache", kv_cache_bytes(cfg, rows, length, torch.bfloat16 if a == 2 else torch.float32)),
             ("logits", N * V * per_logit),
             # the prompts' forward, without a graph, one block at a time: SwiGLU's (P, I) three and fp32 (P, D)s
             ("prompts' forward", prompts * P * (3 * a * I + 16 * D))]
    if device.startswith("cuda"):  # a layer's: the prefill's mask (bool, and as the fused kernel's additive bias) and
        # keys and values repeated to every query head; a decode step's full-length mask (flash.py)
        prefill = 0 if flash_attn(c) else prompts * P * (P * (1 + a) + (2 * H * hd * a if H != cfg["n_kv_head"] else 0))
        terms.append(("SDPA masks and repeated keys", prefill + rows * length * (1 + a)))
    return terms


def update_terms(cfg, c, device, rows, seq_len, a):
    """One micro-batch's forward and backward (train.update) of `rows` sequences: [(term, bytes)]."""
    tokens, V, D, H, L = rows * seq_len, cfg["vocab_size"], cfg["hidden_size"], cfg["n_head"], cfg["n_layer"]
    if c["grad_checkpointing"]:  # each block keeps its fp32 input; backward recomputes one block at a time
        acts = tokens * (L * 4 * D + 2 * block_bytes(cfg, a))
    else:  # every block's saved tensors, and about one block's more in backward
        acts = tokens * (L + 1) * block_bytes(cfg, a)
    chunk = min(tokens, max(1, LOGIT_CHUNK // V))  # head.ChunkedHead's tokens per chunk
    # the head: up to three fp32 (c, V) at once and a bf16 one (its backward: p, log p, the gradient and its cast);
    # per token the final norm's fp32 input, output and normalized states, and the (B, T) log-prob tensors
    # truncated_logprobs: the chunk's top-k/top-p set (head.kept) as in the sampler, and a masked copy (4 B)
    truncation = 4 + (4 if c["top_k"] else 0) + (26 if c["top_p"] < 1 else 0) if c["truncated_logprobs"] else 0
    terms = [("activations", acts), ("head", chunk * V * (12 + a + truncation) + tokens * (12 * D + 32)),
             # its backward's weight gradient (fp32, added to the parameter's after) and the weight in the compute
             # dtype it multiplies by (bf16: a copy; fp32: the weight itself)
             ("head backward", V * D * (4 + (2 if a == 2 else 0)))]
    if c["kl_coef"] > 0:  # the reference's log-probs while the policy's graph is alive: no graph, a block at a time
        terms.append(("reference forward", tokens * (3 * a * cfg["intermediate_size"] + 16 * D) + chunk * V * (8 + a)))
    if device.startswith("cuda") and not flash_attn(c):  # each block saves the fused kernel's additive mask (the bool
        # mask is made once); the keys and values repeated to every head are in block_bytes
        layers = 1 if c["grad_checkpointing"] else L
        terms.append(("SDPA masks", rows * seq_len ** 2 * (1 + a * layers)))
    return terms


def block_bytes(cfg, a):
    """Bytes per token that one block saves for backward (a: bytes per activation), tensor by tensor as autograd
    keeps them (tests/robustness/test_memory.py measures them with torch's MemTracker)."""
    D, I, H, (q, kv) = cfg["hidden_size"], cfg["intermediate_size"], cfg["n_head"], head_dims(cfg)
    # the inputs of q, k, v and of gate, up: autocast casts the input to bf16 at each call (5 copies); in fp32 the
    # calls share it (2)
    inputs = 5 * a * D if a == 2 else 2 * 4 * D
    attention = 4 * a * q + 4 * H  # q, k and v (repeated to every head: flash.py), the output; fp32 log-sum-exp
    mlp = 4 * a * I  # SwiGLU: gate, silu(gate), up, their product
    if cfg["post_norm"]:  # OLMo-2: RMSNorms of bf16 q, k and of both outputs, each its fp32 input and result
        norms = (4 + a) * (q + kv + 2 * D) + 16
    else:  # the two pre-norms: each its fp32 input (the residual) and normalized states, and 1 / rms
        norms = 16 * D + 8
    return inputs + attention + mlp + norms


def head_dims(cfg):
    """The widths of q and of k (or v): heads x head_dim."""
    return cfg["n_head"] * cfg["head_dim"], cfg["n_kv_head"] * cfg["head_dim"]


def flash_attn(c):
    """Whether flash-attn runs the update and the prefill (installed, dtype=bfloat16): packed rows, keys read in
    place, no mask. Decode steps use SDPA either way."""
    return flash.flash_attn_with_kvcache is not None and c["dtype"] == "bfloat16"


def estimate(phases):
    """(bytes at the peak, the phase at the peak): what is held, plus the largest phase."""
    sums = {p: sum(b for _, b in terms) for p, terms in phases.items() if p != "held"}
    peak = max(sums, key=sums.get, default="held")
    return sum(b for _, b in phases["held"]) + sums.get(peak, 0), peak


def summary(phases, peak):
    """One line: the held terms and the peak phase's, in GiB."""
    terms = lambda p: ", ".join(f"{name} {b / GIB:.1f}" for name, b in phases[p])
    held = sum(b for _, b in phases["held"])
    line = f"held {held / GIB:.1f} ({terms('held')})"
    if peak != "held":
        line += f" + {peak} {sum(b for _, b in phases[peak]) / GIB:.1f} ({terms(peak)})"
    return line


def eval_batch_fit(cfg, c, device, seq_len, samples, have, train, world=1):
    """eval_batch_size = 0: as many prompts per evaluation sampler call as fit in the memory `have` less what the
    run holds (every sampler term grows with the prompts, so one prompt's cost divides what is left); 0 if none."""
    held = sum(b for _, b in held_terms(cfg, c, train, world))
    one = sum(b for _, b in sampler_terms(cfg, c, device, 1, samples, seq_len, 2 if c["dtype"] == "bfloat16" else 4))
    return max(0, have - held) // one


# config.json numbers of the paper's three models (from their hub pages), so that --help and bench.py --memory
# estimate their memory offline; only the estimate uses them (training reads the model's own config.json)
PAPER_MODELS = {
    "Qwen/Qwen2.5-0.5B-Instruct": dict(
        model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=True),
    "meta-llama/Llama-3.2-1B-Instruct": dict(
        model_type="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, head_dim=64, rms_norm_eps=1e-5, rope_theta=5e5,
        tie_word_embeddings=True, rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                                    high_freq_factor=4.0, original_max_position_embeddings=8192)),
    "allenai/OLMo-2-0425-1B-Instruct": dict(
        model_type="olmo2", vocab_size=100352, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=16, num_key_value_heads=16, rms_norm_eps=1e-6, rope_theta=5e5, tie_word_embeddings=False),
}
