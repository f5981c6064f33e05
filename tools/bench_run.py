"""
bench.py --run: whole training runs, config/grpo_8rollouts.py on the built-in task (32 prompts x 8 rollouts, its
evaluations included), with and without compile=True, each in a fresh process (so the compiled one pays its
compile, as a user's run does), alternating so that drift in a shared machine's load hits both. Reported: wall
time, the process's CPU time (user + system, its compile workers included), and the median sampling and update
seconds per training step from log.jsonl.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_run(steps, compile, out_dir):
    """(wall s, CPU s, median sample_s, median update_s) of `python train.py config/grpo_8rollouts.py`."""
    before, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "train.py", "config/grpo_8rollouts.py", f"--max_steps={steps}",
                    f"--compile={compile}", f"--out_dir={out_dir}", "--overwrite=True"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    log = [json.loads(line) for line in open(os.path.join(out_dir, "log.jsonl"))]
    steps = [line for line in log if line["step"] > 0]
    return wall, cpu, statistics.median(s["sample_s"] for s in steps), statistics.median(s["update_s"] for s in steps)


def bench_run(steps, rounds=1):
    """Print each setting's figures, `rounds` runs each."""
    print(f"config/grpo_8rollouts.py, {steps} steps, each run a fresh process (load: {os.getloadavg()[0]:.1f})")
    results = {False: [], True: []}
    with tempfile.TemporaryDirectory() as d:
        for _ in range(rounds):
            for compile in (False, True):
                results[compile].append(one_run(steps, compile, os.path.join(d, f"run_{compile}")))
    for compile, runs in results.items():
        wall, cpu, sample_s, update_s = (statistics.median(x) for x in zip(*runs))
        print(f"  compile={compile!s:<5}  wall {wall:7.1f} s   CPU {cpu:7.1f} s   per step: sampling {sample_s:.3f} s, "
              f"update {update_s:.3f} s")
    print(f"(load after: {os.getloadavg()[0]:.1f})")
