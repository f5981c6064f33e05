"""pipelines.py's tables as train.py sees them: every config exists, an entry name means one setting, each
entry changes one design choice from its baseline or reference, the CPU cut and pipeline.json."""
import json
import os

import pipelines
import sweep
from test_sweep import ROOT, recording_train, table_rows


def test_every_pipeline_config_exists():
    for entries in pipelines.PIPELINES.values():
        for cfg in entries.values():
            for arg in cfg:
                assert arg.startswith("--") or os.path.exists(os.path.join(ROOT, arg)), arg


def settings(name, cfg):
    """What train.py runs for a pipeline entry on the CPU base: its resolved knobs (but the seed and out_dir)."""
    import train
    from configurator import configure
    cut = pipelines.CPU_STEPS.get(name)
    args = [pipelines.CPU_BASE, *cfg] + ([f"--max_steps={cut}", f"--eval_interval={cut // 5}"] if cut else [])
    return configure({k: getattr(train, k) for k in train.config_keys}, [os.path.join(ROOT, a) if a.endswith(".py")
                                                                        else a for a in args])


def changed(a, b):
    return {k for k in a if a[k] != b[k]}


def test_an_entry_name_means_one_setting_in_every_pipeline():
    seen = {}
    for entries in pipelines.PIPELINES.values():
        for name, cfg in entries.items():
            assert seen.setdefault(name, cfg) == cfg, name


def test_a_setting_has_one_name_so_pipelines_share_their_runs():
    """The 32 x 8 point of the rollouts, budget and batch grids is one run, rollouts_8: under a name per grid,
    `sweep.py rollouts` after `sweep.py all` in the same --out would train it again."""
    names = {}
    for entries in pipelines.PIPELINES.values():
        for name, cfg in entries.items():
            names.setdefault(tuple(sorted(settings(name, cfg).items())), set()).add(name)
    assert [n for n in names.values() if len(n) > 1] == []


def test_all_runs_every_distinct_setting_once():
    key = lambda name, cfg: tuple(sorted(settings(name, cfg).items()))
    others = [p for k, p in pipelines.PIPELINES.items() if k != "all"]
    kept = {key(*item) for item in pipelines.PIPELINES["all"].items()}
    assert len(kept) == len(pipelines.PIPELINES["all"])  # no two entries of `all` train the same thing
    assert kept == {key(*item) for p in others for item in p.items()}  # and none is missing
    assert next(iter(pipelines.PIPELINES["all"])) == "minimal"  # the baseline of its table


def test_references_are_entries_of_their_pipeline():
    for pipeline, refs in pipelines.REFERENCES.items():
        for entry, ref in refs.items():
            entries = pipelines.PIPELINES[pipeline]
            assert entry in entries and ref in entries, (pipeline, entry)


def test_each_replay_point_is_paired_with_the_same_batch_without_replay():
    entries = pipelines.PIPELINES["replay"]
    pairs = pipelines.TWINS
    assert sorted(pairs) == sorted(n for n in entries if n.startswith("replay_")) and len(pairs) == 6
    assert {e: r for e, r in pipelines.REFERENCES["replay"].items() if e != r} == pairs  # twins: references only
    for replay, twin in pairs.items():
        a, b = settings(replay, entries[replay]), settings(twin, entries[twin])
        assert a["advantage"] == "replay" and a["replay_window"] == 8
        assert b["advantage"] == ("grpo" if b["rollouts"] > 1 else "none")  # GRPO; at n = 1 the raw reward
        assert changed(a, b) == {"advantage"}  # the same batch x rollouts and steps: replay's marginal effect


def test_one_problem_adds_one_layer_per_entry():
    entries = list(pipelines.PIPELINES["one_problem"].items())
    first = settings(*entries[0])
    assert (first["train_problems"], first["batch_size"], first["rollouts"], first["advantage"]) == (1, 1, 1, "none")
    layers = [changed(settings(*b), settings(*a)) for a, b in zip(entries, entries[1:])]
    assert layers == [{"rollouts"}, {"advantage"}, {"train_problems"}, {"train_problems"}, {"batch_size"}]
    assert pipelines.REFERENCES["one_problem"] == {b[0]: a[0] for a, b in zip(entries, entries[1:])}  # vs the last


def test_gspo_and_cispo_are_compared_with_ppo_at_the_same_updates_per_step():
    entries = pipelines.PIPELINES["loss"]
    ppo = settings("ppo_4minibatches", entries["ppo_4minibatches"])
    assert changed(ppo, settings("rollouts_8", entries["rollouts_8"])) == {"minibatches"}
    for name in ("gspo", "cispo"):
        assert pipelines.REFERENCES["loss"][name] == "ppo_4minibatches"
        assert settings(name, entries[name])["minibatches"] == ppo["minibatches"] == 4


def test_cpu_steps_cut_only_expensive_entries_and_end_on_an_eval_of_the_150_step_runs():
    for name, steps in pipelines.CPU_STEPS.items():
        c = settings(name, pipelines.PIPELINES["all"][name])
        if name in pipelines.PIPELINES["precision"]:  # cheap batches but slow CPU autocast: all cut alike, fp32 too
            assert steps == pipelines.CPU_STEPS["fp32"] and c["eval_interval"] == steps // 5
            continue
        assert c["batch_size"] * c["rollouts"] > 256 and steps % 25 == 0 and c["eval_interval"] == steps // 5


def test_precision_changes_only_the_precision_and_the_correction_and_pairs_tis_and_mis_with_the_bare_gap():
    entries = pipelines.PIPELINES["precision"]
    fp32 = settings("fp32", entries["fp32"])
    assert (fp32["dtype"], fp32["sampler_dtype"], fp32["is_correction"]) == ("float32", "", "none")
    # the minimal baseline, run for the CPU cut's steps
    assert changed(fp32, settings("minimal", ["config/minimal.py"])) == {"max_steps", "eval_interval"}
    want = dict(bf16_sampler={"sampler_dtype"}, bf16_sampler_tis={"sampler_dtype", "is_correction"},
                bf16_sampler_mis={"sampler_dtype", "is_correction"}, bf16={"dtype"}, fp16={"dtype"})
    assert {name: changed(settings(name, cfg), fp32) for name, cfg in entries.items() if name != "fp32"} == want
    assert pipelines.REFERENCES["precision"] == dict(bf16_sampler_tis="bf16_sampler",
                                                     bf16_sampler_mis="bf16_sampler")


def test_top_p_changes_only_the_nucleus_then_only_the_log_probs_it_scores():
    entries = pipelines.PIPELINES["top_p"]
    minimal, full = settings("minimal", entries["minimal"]), settings("top_p80", entries["top_p80"])
    assert entries["minimal"] == pipelines.PIPELINES["extra"]["minimal"]  # the same runs as the other pipelines'
    assert changed(full, minimal) == {"top_p"} and full["top_p"] == 0.8 and not full["truncated_logprobs"]
    assert changed(settings("top_p80_truncated", entries["top_p80_truncated"]), full) == {"truncated_logprobs"}
    assert pipelines.REFERENCES["top_p"] == dict(top_p80_truncated="top_p80")


def test_the_cpu_cut_and_pipeline_json_as_train_py_sees_them(tmp_path, monkeypatch):
    recording_train(tmp_path, monkeypatch)
    monkeypatch.chdir(ROOT)
    gpu_base = "config/paper/qwen2.5-0.5b_gsm8k.py"
    for base, out in ((pipelines.CPU_BASE, tmp_path / "cpu"), (gpu_base, tmp_path / "gpu")):
        sweep.main(["replay", "--seeds=1", f"--out={out}", f"--base={base}", "--jobs=1"])
        argv = json.load(open(out / "replay_2048x1" / "seed0" / "argv.json"))
        assert argv[:2] == [base, "config/paper/replay_2048x1.py"]
        assert ("--max_steps=25" in argv) == (base == pipelines.CPU_BASE)  # the paper's runs are not cut
        pipe = json.load(open(out / "pipeline.json"))
        assert pipe["entries"] == list(pipelines.PIPELINES["replay"]) and pipe["baseline"] == "budget256_64x4"
        assert pipe["references"] == pipelines.REFERENCES["replay"]
        rows = table_rows(out / "results.md")
        assert rows["replay_512x1"][6] == "minimal_512x1" and rows["minimal_512x1"][6] == "—"  # plot.py pairs them

