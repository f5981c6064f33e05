"""
Makes assets/tiny-arith: the base policy of the built-in arithmetic task, in Hugging Face format.

    python tools/make_tiny_arith.py            # ~2-5 minutes on a 2-core CPU, deterministic

A character-level tokenizer and a 0.86M-parameter Qwen2-architecture model get a short
supervised warm-up on addition problems that are in neither the train nor the test split.
Warm-up stops as soon as sampled pass@1 on a separate dev set reaches `target`, so the base
policy is partly competent (it sometimes adds right at temperature 1) and RL has headroom.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: the code this tool drives
sys.path.insert(0, ROOT)

import random
import shutil

import torch
import torch.nn.functional as F
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

import data
from evaluate import evaluate
from model import Transformer

out_dir = "assets/tiny-arith"
target = 0.25  # stop the warm-up once dev sampled pass@1 reaches this
batch_size, lr, max_steps, eval_every = 64, 1e-3, 3000, 20


def make_tokenizer():
    from transformers import PreTrainedTokenizerFast
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<unk>"] + list("0123456789+="))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tk.decoder = decoders.Fuse()  # join characters back without spaces
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def hf_config(vocab_size):
    from transformers import Qwen2Config
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                      tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    return dict(cfg.to_dict(), architectures=["Qwen2ForCausalLM"])


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # bit-reproducible, and steadier than 2 threads on shared 2-core machines
    tok = make_tokenizer()
    model = Transformer(hf_config(len(tok)))
    model.init_weights(seed=0)
    used = {p for split in data.arith_pairs().values() for p in split}
    rng = random.Random(0)

    def fresh_pairs(k):  # warm-up problems never in the train or test split
        out = []
        while len(out) < k:
            p = divmod(rng.randrange(10 ** 6), 1000)
            if p not in used:
                out.append(p)
        return out

    dev = [data.arith_problem(a, b) for a, b in fresh_pairs(500)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    for step in range(1, max_steps + 1):
        seqs, starts = [], []
        for a, b in fresh_pairs(batch_size):
            p = data.arith_problem(a, b)
            prompt = tok.encode(p["prompt"], add_special_tokens=False)
            seqs.append(prompt + tok.encode(p["answer"], add_special_tokens=False) + [tok.eos_token_id])
            starts.append(len(prompt))
        T = max(map(len, seqs))
        x = torch.tensor([s + [0] * (T - len(s)) for s in seqs])  # (B, T), right-padded
        y = x[:, 1:].clone()
        for i, (s, st) in enumerate(zip(seqs, starts)):  # learn the answer and EOS, not the prompt
            y[i, :st - 1] = -100
            y[i, len(s) - 1:] = -100
        loss = F.cross_entropy(model.logits(x)[:, :-1].reshape(-1, len(tok)), y.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0:
            gen = torch.Generator().manual_seed(0)
            acc = evaluate(model, tok, "arith", dev, greedy=False, max_new_tokens=6, generator=gen)["pass@1"]
            print(f"step {step}: loss {loss.item():.3f}, dev sampled pass@1 {acc:.3f}")
            if acc >= target:
                break
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    mb = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir)) / 2 ** 20
    test = evaluate(model, tok, "arith", data.load_split("arith", "test"), max_new_tokens=6,
                    generator=torch.Generator().manual_seed(0))
    print(f"wrote {out_dir} ({mb:.1f} MB): test {test}")


if __name__ == "__main__":
    main()
