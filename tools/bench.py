"""
Throughput of nanoRFT's sampler, update and rewards, side by side with transformers (and math-verify) on the
same work.

    python tools/bench.py                 # CPU, fp32, 1 thread: the figures in docs/speed.md
    python tools/bench.py --device=cuda --dtype=bfloat16 --threads=0
    python tools/bench.py --gsm8k         # only the GSM8K-like update (about a minute on one CPU thread)
    python tools/bench.py --run           # whole config/grpo_8rollouts.py runs, with and without compile
    python tools/bench.py --memory        # GPU memory of the paper's three models, without a GPU
    python tools/bench.py --rewards       # reward.score's time per call per grader, next to math-verify's
    python tools/bench.py --gpu           # on a GPU: the first-GPU checklist (docs/gpu.md)

Shapes: (1) the built-in task's policy at its default GRPO rollout shape, 32 prompts x 8 rollouts;
(2) a ~3M-parameter random Qwen2 at batch 64 with 64 new tokens. Both samplers produce exactly
max_new_tokens per row (no stop token), so they do the same work; nanoRFT's runs eager and compiled
(compile=True: machinery/decode.py; the first call's compile is timed apart), unless --no-compile. The update
takes the whole batch at once. (3) The update alone at a GSM8K-like shape: a random Qwen2 with Qwen2.5's 152k
vocabulary, 16 responses of mixed lengths to prompts of 60-200 tokens, micro-batches of 8 as in the paper
configs. The update is train.update's work next to transformers' forward + backward as TRL's GRPOTrainer runs
it (bench_update.py); tokens/s count real tokens, prompts included. Its peak memory is the activations and
temporaries (weights and gradients excluded) that torch's MemTracker counts over one update. Figures are
medians of rounds.

--memory (bench_memory.py) measures the paper models' GPU memory under FakeTensorMode, without a GPU;
--rewards (bench_rewards.py) times reward.score; --run (bench_run.py) times whole training runs; --gpu
(bench_gpu.py) is docs/gpu.md's first-GPU checklist.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: the code this tool drives
sys.path.insert(0, ROOT)

import argparse
import tempfile

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from machinery import flash
from machinery.cli import die
from machinery.memory import PAPER_MODELS
from model import Transformer
from rollout import Rollout, generate

from bench_gpu import checklist
from bench_memory import memory
from bench_rewards import bench_rewards
from bench_run import bench_run
from bench_update import bench_gsm8k, bench_update, gsm8k_rows, kernel_share, timeit


def bench_shape(name, path, n_prompts, n, prompt_len, new_tokens, args):
    dt = dict(float32=torch.float32, bfloat16=torch.bfloat16)[args.dtype]
    ours = Transformer.from_pretrained(path, dtype=dt, device=args.device).eval()
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dt).to(args.device).eval()
    vocab = ours.cfg["vocab_size"]
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, vocab, (n_prompts, prompt_len), generator=g).to(args.device)
    # bf16 runs under autocast too, as train.py's do: that is what routes CUDA attention to flash-attn
    amp = lambda: torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.dtype == "bfloat16")

    def ours_gen(compile=False):
        with amp():
            return generate(ours, prompts.tolist(), n, new_tokens, temperature=1.0, compile=compile)
    hf_gen = lambda: hf.generate(prompts, do_sample=True, num_return_sequences=n, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0, top_k=None,
                                 top_p=None, temperature=1.0)
    n_tok = n_prompts * n * new_tokens
    fns = [ours_gen, hf_gen]
    if args.compile:  # the first compiled call compiles the decode step: timed apart, once
        t_compile, = timeit([lambda: ours_gen(compile=True)], args.device, 1, warmup=False)
        fns.append(lambda: ours_gen(compile=True))
    t_ours, t_hf, *t_compiled = timeit(fns, args.device, args.repeat)

    print(f"\n{name}: {sum(p.numel() for p in ours.parameters()) / 1e6:.2f}M params, {n_prompts} prompts x "
          f"{n} samples, {prompt_len} prompt + {new_tokens} new tokens")
    print(f"  sampler  nanoRFT {n_tok / t_ours:10.0f} tok/s   "
          f"transformers generate() {n_tok / t_hf:10.0f} tok/s   ratio {t_hf / t_ours:.2f}x")
    if t_compiled:
        print(f"  sampler  nanoRFT compiled {n_tok / t_compiled[0]:10.0f} tok/s   ratio to generate() "
              f"{t_hf / t_compiled[0]:.2f}x, to eager {t_ours / t_compiled[0]:.2f}x   (compile: first call "
              f"{t_compile:.1f} s)")
        floor = kernel_share(lambda: ours_gen(compile=True)) * t_compiled[0]
        print(f"  floor    the compiled sampler's matmuls and attention alone {n_tok / floor:10.0f} tok/s: at most "
              f"{t_hf / floor:.2f}x generate() were every other cost gone")
    bench_update(ours, hf, ours_gen(), len(prompts) * n, amp, args, args.repeat)  # the whole batch at once


def gpu_checklist():
    """--gpu: bench_gpu.checklist on Qwen2.5-0.5B-Instruct from the HF cache, else random weights of its shape."""
    if not torch.cuda.is_available():
        die("--gpu needs a CUDA device and torch sees none: "
            "run it on a machine with a GPU and torch's CUDA build")
    from huggingface_hub import try_to_load_from_cache
    hub_id = "Qwen/Qwen2.5-0.5B-Instruct"
    cached = try_to_load_from_cache(hub_id, "config.json")  # a path if downloaded before
    if isinstance(cached, str):
        model, source = Transformer.from_pretrained(os.path.dirname(cached), device="cuda"), "weights: HF cache"
    else:  # the kernels' choice, speed and memory need the shape, not the trained weights
        model, source = Transformer(PAPER_MODELS[hub_id]), "random weights of its shape (not in the HF cache)"
        model.init_weights()
        model.to("cuda")
    rows = Rollout(*(x.to("cuda") for x in gsm8k_rows(model.cfg["vocab_size"], prompts=4, n=8)))
    # the rows' 4 prompts, 8 times: 32 prompts of 60-200 tokens, 8 responses each
    prompts = [row[valid].tolist() for row, valid in zip(rows.tokens[::8], rows.valid[::8])] * 8
    return checklist(model, source, rows, prompts)


def main():
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--repeat", type=int, default=15, help="timed rounds; medians are reported")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="skip nanoRFT's compiled sampler (compile=True; its compile takes ~1 min a shape on a CPU)")
    p.add_argument("--memory", action="store_true", help="estimate the paper models' GPU memory instead")
    p.add_argument("--gsm8k", action="store_true", help="only the update at the GSM8K-like shape")
    p.add_argument("--rewards", action="store_true",
                   help="reward.score's speed per grader, next to math-verify's")
    p.add_argument("--run", type=int, nargs="?", const=600, metavar="STEPS",
                   help="whole config/grpo_8rollouts.py runs of STEPS steps (600: its own), with and without compile")
    p.add_argument("--gpu", action="store_true", help="on a CUDA GPU: the first-GPU checklist (docs/gpu.md): "
                   "attention kernels, eager vs compiled decoding, the sampler/trainer gap, peak memory")
    args = p.parse_args()
    if args.gpu:
        sys.exit(gpu_checklist())
    if args.run:
        return bench_run(args.run)
    if args.rewards:
        return bench_rewards()
    if args.memory:
        return memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    use_flash = flash.flash_attn_with_kvcache is not None and args.device.startswith("cuda") \
        and args.dtype == "bfloat16"
    print(f"torch {torch.__version__}, device {args.device}, {args.dtype}, "
          f"{torch.get_num_threads()} thread(s), attention: {'flash-attn' if use_flash else 'PyTorch SDPA'}")
    if args.gsm8k:
        return bench_gsm8k(args)
    bench_shape("tiny-arith policy", os.path.join(ROOT, "assets", "tiny-arith"), 32, 8, 8, 8, args)
    with tempfile.TemporaryDirectory() as d:
        cfg = Qwen2Config(vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
        AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
        bench_shape("~3M Qwen2", d, 64, 1, 32, 64, args)
    bench_gsm8k(args)


if __name__ == "__main__":
    main()
