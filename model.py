"""
A hand-written decoder-only transformer that reads and writes Hugging Face checkpoints.

One block covers three families with three flags:
- Qwen2:    pre-norm, q/k/v projections carry a bias            (qkv_bias)
- Llama-3:  pre-norm, no bias, "llama3" RoPE frequency scaling  (rope_scaling)
- OLMo-2:   norms *after* attention and MLP, RMSNorm on q and k (post_norm, qk_norm)
Module names mirror transformers' (model.layers.0.self_attn.q_proj, ...): state_dicts load and save unmapped.

Entry points, one job each:
- model(tokens, valid, response, ...)   the update's log-probs and entropies (B, T) (forward: DDP wraps it)
- model.logits(idx)                     logits (B, T, V) of an unpadded batch
- model.prefill(idx, valid, cache, n)   prompts into a KV cache (new_cache), n rows each -> next logits (B, V)
- model.decode(idx, pos, col, valid, cache)  one token a row -> next logits (B, V); static shapes (torch.compile)
"""
import glob
import json
import math
import os
import shutil
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.checkpoint import checkpoint

from machinery import flash
from machinery.cli import die, first_line
from machinery.head import ChunkedHead

FAMILIES = ("qwen2", "llama", "olmo2")


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # normalize in fp32 like transformers does, so bf16 runs match theirs
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_inv_freq(cfg):
    """Inverse frequencies (head_dim/2,) of rotary embeddings, with Llama-3's long-context scaling."""
    d = cfg["head_dim"]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    rs = cfg["rope_scaling"]
    if rs is None or rs.get("rope_type", rs.get("type")) in (None, "default"):
        return inv_freq.float()
    if rs.get("rope_type", rs.get("type")) != "llama3":
        die(f"rope scaling type {rs.get('rope_type')!r} is not supported (only llama3)")
    # Llama 3.1 paper: keep high frequencies, divide low ones by `factor`, interpolate between
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_len = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = ((old_len / wavelen - lo) / (hi - lo)).clamp(0, 1)
    scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    return scaled.float()


def apply_rope(x, cos, sin):
    # x: (B, T, H, D); cos, sin: (B, T, 1, D); the "rotate half" convention of HF checkpoints
    # EXERCISE rope: return x (B, T, H, D) with each pair of dims (i, i + D/2) rotated by its angle, whose cos
    # and sin are given (tests: tests/test_model.py -k "rope or position_differences")
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin
    # END EXERCISE


class Attention(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.layer = layer  # which of the KV cache's layers holds this one's keys and values
        self.n_head, self.n_kv_head, self.head_dim = cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"]
        d, q_dim, kv_dim = cfg["hidden_size"], self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        self.q_proj = nn.Linear(d, q_dim, bias=cfg["qkv_bias"])
        self.k_proj = nn.Linear(d, kv_dim, bias=cfg["qkv_bias"])
        self.v_proj = nn.Linear(d, kv_dim, bias=cfg["qkv_bias"])
        self.o_proj = nn.Linear(q_dim, d, bias=False)
        if cfg["qk_norm"]:  # OLMo-2 normalizes q and k over all heads at once, before RoPE
            self.q_norm = RMSNorm(q_dim, cfg["rms_norm_eps"])
            self.k_norm = RMSNorm(kv_dim, cfg["rms_norm_eps"])

    def forward(self, x, rope, ctx):
        B, T, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = k.view(B, T, self.n_kv_head, self.head_dim)  # (B, T, H_kv, D)
        v = v.view(B, T, self.n_kv_head, self.head_dim)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        y = flash.attention(q, k, v, ctx, self.layer)  # (B, T, H, D): causal, padding skipped, cache read
        return self.o_proj(y.reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"], bias=False)
        self.up_proj = nn.Linear(cfg["hidden_size"], cfg["intermediate_size"], bias=False)
        self.down_proj = nn.Linear(cfg["intermediate_size"], cfg["hidden_size"], bias=False)

    def forward(self, x):  # SwiGLU
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg, layer):
        super().__init__()
        self.post_norm = cfg["post_norm"]
        self.self_attn, self.mlp = Attention(cfg, layer), MLP(cfg)
        d, eps = cfg["hidden_size"], cfg["rms_norm_eps"]
        # HF's names: in Llama/Qwen2 "post_attention_layernorm" is the norm *before* the MLP
        self.post_attention_layernorm = RMSNorm(d, eps)
        if self.post_norm:
            self.post_feedforward_layernorm = RMSNorm(d, eps)
        else:
            self.input_layernorm = RMSNorm(d, eps)

    def forward(self, x, rope, ctx):
        if self.post_norm:  # OLMo-2
            x = x + self.post_attention_layernorm(self.self_attn(x, rope, ctx))
            return x + self.post_feedforward_layernorm(self.mlp(x))
        x = x + self.self_attn(self.input_layernorm(x), rope, ctx)
        return x + self.mlp(self.post_attention_layernorm(x))


def read_hf_config(hf):
    """The few numbers the model needs, from a transformers config.json dict (v4 or v5 layout)."""
    if hf.get("model_type") not in FAMILIES:
        die(f"model_type {hf.get('model_type')!r} is not supported; expected one of {FAMILIES}")
    rope = hf.get("rope_parameters") or {}
    n_head = hf["num_attention_heads"]
    return dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
        n_layer=hf["num_hidden_layers"], n_head=n_head, n_kv_head=hf.get("num_key_value_heads") or n_head,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // n_head, rms_norm_eps=hf["rms_norm_eps"],
        rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
        rope_scaling=rope if rope.get("rope_type", "default") != "default" else hf.get("rope_scaling"),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        qkv_bias=hf["model_type"] == "qwen2" or hf.get("attention_bias", False),
        qk_norm=hf["model_type"] == "olmo2", post_norm=hf["model_type"] == "olmo2",
        max_positions=hf.get("max_position_embeddings"),  # prompt + response must fit (None: not stated)
    )


def kv_cache_bytes(cfg, batch, max_len, dtype):
    """Bytes of the sampler's KV cache, keys and values (2, L, batch, max_len, H_kv, D), to refuse an absurd
    size before allocating it. cfg: a Transformer, its cfg, or a config.json dict; dtype: torch's or its name."""
    cfg = getattr(cfg, "cfg", cfg)
    cfg = read_hf_config(cfg) if "model_type" in cfg else cfg
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return 2 * cfg["n_layer"] * batch * max_len * cfg["n_kv_head"] * cfg["head_dim"] * dtype.itemsize


def positions(valid):
    """Position ids (B, T) that start at 0 on each row's first real token (left padding)."""
    return (valid.long().cumsum(-1) - 1).clamp(min=0)


class Transformer(nn.Module):
    def __init__(self, hf_config):
        super().__init__()
        self.hf_config = dict(hf_config)  # kept verbatim so save_pretrained writes what transformers expects
        self.cfg = cfg = read_hf_config(hf_config)
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(cfg["vocab_size"], cfg["hidden_size"]),
            layers=nn.ModuleList(Block(cfg, i) for i in range(cfg["n_layer"])),
            norm=RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"]),
        ))
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        if cfg["tie_word_embeddings"]:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", rope_inv_freq(cfg), persistent=False)
        self.grad_checkpointing = False  # recompute each block in backward instead of storing its activations

    @torch.no_grad()
    def init_weights(self, seed=0):
        """Random init (GPT-2 style, std 0.02) for models trained from scratch, e.g. the tiny arithmetic policy."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.fill_(1.0 if "norm" in name else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)

    def forward(self, tokens, valid, response=None, temperature=1.0, entropy_grad=False, nucleus=(0, 1.0)):
        """The update's log-probs. tokens, valid (B, T): token ids, False on padding; response (B, T): the
        tokens whose log-probs are wanted (default: every real token after a real one) -> logprobs, entropy
        (B, T) float32 of each wanted token given those before it, under softmax(logits / temperature) (over
        the top_k / top_p set when nucleus = (top_k, top_p) is on: truncated_logprobs), zero elsewhere. The
        head, most of the update's memory and FLOPs, runs only where wanted. entropy_grad: for an entropy bonus."""
        wanted = valid & F.pad(valid[:, :-1], (1, 0))  # real tokens after a real token
        wanted = wanted if response is None else wanted & response
        shared = flash.shared_prompts(tokens, valid, response)
        if shared is None:
            x = self.hidden(flash.context(tokens, positions(valid), valid, None))[0]  # (B, T, D)
        else:  # GRPO's n responses per prompt: each prompt's tokens run once, not n times
            c, p_idx, p_valid, inverse = shared
            p_ctx, ctx = flash.shared_prompt_contexts(p_valid, valid[:, c:], inverse)
            xp, x = self.hidden((p_idx, positions(p_valid), p_ctx), (tokens[:, c:], positions(valid)[:, c:], ctx))
            x = torch.cat([xp[inverse, -1:], x], 1)  # (B, 1 + T - c, D): a prompt's last state predicts too
            tokens, wanted = tokens[:, c - 1:], wanted[:, c - 1:]
        scored = F.pad(wanted[:, 1:], (0, 1))  # (B, T): position t predicts token t + 1
        h, targets = self.model.norm(x[scored]), tokens.roll(-1, 1)[scored]  # (n, D), (n,)
        logprobs, entropy = ChunkedHead.apply(h, self.lm_head.weight, targets, temperature, entropy_grad, *nucleus)
        zeros = torch.zeros(wanted.shape, device=tokens.device)
        lp, ent = zeros.masked_scatter(wanted, logprobs), zeros.masked_scatter(wanted, entropy)
        if shared is not None:  # back to the (B, T) layout: nothing is wanted in the prompt columns
            lp, ent = F.pad(lp, (c - 1, 0)), F.pad(ent, (c - 1, 0))
        return lp, ent

    def logits(self, idx):
        """idx (B, T) token ids, no padding -> logits (B, T, V) of the next token at every position."""
        pos = torch.arange(idx.size(1), device=idx.device).expand(idx.shape)
        x = self.hidden(flash.context(idx, pos, None, None))[0]  # (B, T, D)
        return self.lm_head(self.model.norm(x))

    def new_cache(self, batch, max_len, buffer=None):
        c, p = self.cfg, self.lm_head.weight
        kind = p.device.type  # under autocast keys/values come out in bf16: store them so, at half the memory
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else p.dtype
        return flash.KVCache(c["n_layer"], batch, c["n_kv_head"], max_len, c["head_dim"], dtype, p.device, buffer)

    def prefill(self, idx, valid, cache, n=1):
        """Prompts idx (B, T), left-padded where valid (B, T) is False (None: no padding), into columns [0, T) of
        the cache, each prompt into n rows (its samples) -> logits (B, V) at each one's last token."""
        pos = torch.arange(idx.size(1), device=idx.device).expand(idx.shape) if valid is None else positions(valid)
        x = self.hidden(flash.context(idx, pos, valid, cache, n))[0]  # (B, T, D)
        return self.lm_head(self.model.norm(x[:, -1]))  # the other positions' logits are not needed

    def decode(self, idx, pos, col, valid, cache):
        """One step on the cache: idx, pos (B,): each row's newest token and its position id; col: () long tensor,
        the cache column it is written to; valid (B, T_cache): False on the prompts' left padding (None: none) ->
        next logits (B, V). Tensors in, tensors out, the same shapes every token: torch.compile captures it whole."""
        x = self.hidden(flash.decode_context(idx[:, None], pos[:, None], col, valid, cache))[0]  # (B, 1, D)
        return self.lm_head(self.model.norm(x[:, -1]))

    def hidden(self, *passes):
        """The blocks: passes (idx, pos (B, T), ctx: flash.context) -> each one's last hidden states (B, T, D),
        run layer by layer together: shared prompts keep a layer's keys and values for their responses."""
        states = [(self.model.embed_tokens(idx), self.rope(pos), ctx) for idx, pos, ctx in passes]
        # in backward; grad mode first: sampling (no_grad) reads neither flag, so train and eval share its graphs
        recompute = torch.is_grad_enabled() and self.grad_checkpointing and self.training
        for block in self.model.layers:
            run = partial(checkpoint, block, use_reentrant=False) if recompute else block
            states = [(run(x, rope, ctx), rope, ctx) for x, rope, ctx in states]
        return [flash.unpack(x, ctx) for x, _, ctx in states]

    def rope(self, pos):
        """Position ids (B, T) -> the cos and sin (B, T, 1, D) that rotate q and k."""
        freqs = pos[..., None].float() * self.inv_freq  # (B, T, D/2), fp32 like HF
        emb = torch.cat((freqs, freqs), dim=-1)[:, :, None]  # (B, T, 1, D)
        dtype = self.model.embed_tokens.weight.dtype  # the hidden states' dtype (autocast leaves embeddings)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    @classmethod
    def from_pretrained(cls, path, dtype=torch.float32, device="cpu"):
        """Load a Hugging Face checkpoint: a local directory, or a hub id such as Qwen/Qwen2.5-0.5B-Instruct.
        A missing, truncated or mismatched file ends the run with one line naming it (exit 2)."""
        path = resolve(path)
        config = os.path.join(path, "config.json")
        if not os.path.isfile(config):
            die(f"{config} is missing: a model directory needs the config.json that save_pretrained writes")
        try:
            with open(config, encoding="utf-8") as f:
                model = cls(json.load(f))
        except (ValueError, KeyError, TypeError, AttributeError) as e:  # bad JSON, bad UTF-8, missing numbers
            die(f"{config} is not a transformers model config ({type(e).__name__}: {first_line(e)}): "
                f"copy the base model's config.json or save the model again")
        files = sorted(glob.glob(os.path.join(glob.escape(path), "*.safetensors")))
        if not files:
            die(f"no *.safetensors weights in {path}: save the model with save_pretrained (safetensors format)")
        sd, where = {}, {}
        for fn in files:
            try:
                part = load_file(fn)
            except (SafetensorError, OSError) as e:
                die(f"{fn} is truncated or corrupt ({first_line(e)}): download or save the model again")
            sd.update(part)
            where.update(dict.fromkeys(part, fn))
        if model.cfg["tie_word_embeddings"]:
            sd.pop("lm_head.weight", None)  # some checkpoints store the tied copy too
        want = model.state_dict()
        for k, v in sd.items():
            if k in want and v.shape != want[k].shape:
                die(f"{where[k]}: {k} has shape {tuple(v.shape)} but {config} implies {tuple(want[k].shape)}; "
                    f"the weights and config.json come from different models")
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not (k == "lm_head.weight" and model.cfg["tie_word_embeddings"])]
        if missing or unexpected:
            die(f"weights in {path} do not match {config}: missing {missing[:3]}, unexpected {unexpected[:3]}; "
                f"the weights and config.json come from different models")
        model.source = path  # save_pretrained copies its generation_config.json
        return model.to(device=device, dtype=dtype)

    def save_pretrained(self, out):
        """Write config.json + model.safetensors that transformers (and vLLM) load as they are."""
        os.makedirs(out, exist_ok=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.cfg["tie_word_embeddings"]:
            sd.pop("lm_head.weight")  # safetensors refuses shared tensors; transformers re-ties on load
        save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
        hf = dict(self.hf_config, torch_dtype=str(self.lm_head.weight.dtype).removeprefix("torch."))
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump(hf, f, indent=2)
        # the base model's stop ids and default sampling settings, which vLLM and generate() apply on their own
        gen = os.path.join(getattr(self, "source", ""), "generation_config.json")
        if os.path.exists(gen):
            shutil.copyfile(gen, os.path.join(out, "generation_config.json"))


def resolve(path):
    """A local directory as is; otherwise download config, weights and tokenizer from the hub."""
    if os.path.isdir(path):
        return path
    if os.path.exists(path) or path.count("/") != 1:
        die(f"{path!r} is neither a model directory nor a hub id like Qwen/Qwen2.5-0.5B-Instruct")
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
    except Exception as e:  # offline, gated, or a typo: all end the same way for the user
        die(f"could not get {path!r} from the Hugging Face hub ({type(e).__name__}), and no local path has that "
            f"name; download it elsewhere and pass its local directory instead")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def load_tokenizer(path):
    """The Hugging Face tokenizer saved with a model (a directory or hub id), or one line saying what is wrong."""
    from transformers import AutoTokenizer
    path = resolve(path)
    if not any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES):
        die(f"{path} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): copy them from the base model, "
            f"e.g. AutoTokenizer.from_pretrained(base).save_pretrained({path!r})")
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # a half-copied or foreign tokenizer fails deep inside transformers, in many ways
        die(f"the tokenizer in {path} does not load ({type(e).__name__}: {first_line(e)}): "
            f"copy its files again from the base model")

