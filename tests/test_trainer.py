"""The draft trainer on a tiny random target and a deterministic pattern language (CPU, seconds)."""
import dataclasses
import json
import os
import random
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hass import DraftModel, HassModel
from hass.errors import DraftMismatchError
from train.data import write_prepared
from train.features import FeatureStore, FeatureStoreError, compute_features, target_fingerprint, write_features
from train.trainer import Run, TrainConfig, collate, load_config, train
from train.trainer import main as trainer_main

ROOT = Path(__file__).resolve().parents[1]


def make_target(folder: Path, hidden: int = 64, seed: int = 0) -> Path:
    """A tiny random LLaMA whose next-token distributions are peaked (large lm_head), so its argmax is a
    deterministic function of the context that a draft can learn."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(std=0.3)
        model.model.embed_tokens.weight.normal_(std=1.0)
    model.save_pretrained(folder)
    return folder


def pattern_samples(n: int, seed: int = 0) -> list[dict]:
    """Arithmetic progressions mod 128 (stride 1-3); the first 4 tokens play the prompt (no loss)."""
    rng = random.Random(seed)
    samples = []
    for i in range(n):
        stride, start, length = rng.choice([1, 2, 3]), rng.randrange(128), rng.randrange(24, 41)
        ids = [(start + stride * t) % 128 for t in range(length)]
        samples.append({"id": str(i), "input_ids": ids, "loss_mask": [0] * 4 + [1] * (length - 4)})
    return samples


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_target(root / "target")
    make_target(root / "other_target", seed=1)  # same shapes, other weights and name
    make_target(root / "narrow_target", hidden=32)
    write_prepared(root / "data.jsonl", {"tokenizer": "none", "max_length": 64}, pattern_samples(120))
    return root


def config(tiny: Path, out: Path, **overrides) -> TrainConfig:
    values = dict(target=str(tiny / "target"), data=str(tiny / "data.jsonl"), output_dir=str(out), batch_size=4,
                  lr=3e-3, dtype="float32", target_dtype="float32", threads=1, plot=False, eval_fraction=0.05)
    values.update(overrides)
    return TrainConfig(**values)


def test_config_file_stages_and_overrides(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"target": "t", "data": "d", "output_dir": "o", "hca_steps": 3,
                                "stages": {"1": {"hod_weight": 0.0}, "2": {"hod_weight": 1.0, "lr": 1e-5}}}))
    cfg = load_config(["--config", str(path), "--stage", "2", "--betas", "0.8,0.9", "--features=none",
                       "--max-steps", "7", "--local_rank=0"])
    assert (cfg.hod_weight, cfg.lr, cfg.betas, cfg.features, cfg.max_steps) == (1.0, 1e-5, (0.8, 0.9), None, 7)
    assert load_config(["--config", str(path), "--stage", "1"]).hod_weight == 0.0
    with pytest.raises(ValueError, match="choose one with --stage"):
        load_config(["--config", str(path)])
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(["--config", str(path), "--stage", "1", "--hca_stepz", "2"])
    with pytest.raises(ValueError, match="--hca_steps"):
        load_config(["--config", str(path), "--stage", "1", "--hca_steps", "1.5"])
    with pytest.raises(ValueError, match="hca_steps must be >= 1"):
        load_config(["--config", str(path), "--stage", "1", "--hca_steps", "0"])
    with pytest.raises(TypeError, match="batch_size"):
        TrainConfig(target="t", data="d", output_dir="o", batch_size=True)
    with pytest.raises(ValueError, match="does not exist"):
        load_config(["--config", str(tmp_path / "missing.json")])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(["--config", str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit, match="does not exist"):  # the CLI prints the message, no traceback
        trainer_main(["--config", str(tmp_path / "missing.json")])


@pytest.mark.parametrize("fast", [True, False])
def test_auto_dtypes_follow_the_bf16_units_and_may_change_on_resume(monkeypatch, fast):
    import hass.precision
    from train.trainer import RESUME_MAY_CHANGE

    monkeypatch.setattr(hass.precision, "bf16_is_fast", lambda device: fast)
    cfg = TrainConfig(target="t", data="d", output_dir="o", dtype="auto", target_dtype="auto")
    assert cfg.dtype == cfg.target_dtype == ("bfloat16" if fast else "float32")  # saved resolved: what ran
    assert {"dtype", "target_dtype"} <= set(RESUME_MAY_CHANGE)  # a run may move to a CPU without bf16 units
    with pytest.raises(ValueError, match="or auto"):
        TrainConfig(target="t", data="d", output_dir="o", dtype="fp8")


def test_training_learns_the_pattern_at_every_aligning_step(tiny, tmp_path):
    cfg = config(tiny, tmp_path / "run", max_steps=150, plot=True)
    final = train(cfg)
    evals = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    last = [r for r in evals if r["split"] == "eval"][-1]
    # chance: the target's most frequent argmax covers ~4% of positions
    target = LlamaForCausalLM.from_pretrained(tiny / "target")
    counts = Counter()
    for s in pattern_samples(120):
        counts.update(target(torch.tensor([s["input_ids"]])).logits[0].argmax(-1).tolist())
    majority = counts.most_common(1)[0][1] / sum(counts.values())
    assert majority < 0.1
    for s in (1, 2, 3):
        assert last[f"acc_s{s}"] > 0.6, last
    assert (tmp_path / "run" / "training_curve.png").stat().st_size > 0
    saved = json.loads((final / "train_config.json").read_text())
    assert saved["max_steps"] == 150 and saved["hca_steps"] == 3
    model = HassModel.from_pretrained(tiny / "target", final, dtype=torch.float32)
    out = model.generate(torch.tensor([[1, 2, 3, 4, 5]]), max_new_tokens=8)
    assert out.new_tokens == 8


def test_resume_gives_the_uninterrupted_result(tiny, tmp_path):
    kw = dict(max_steps=6, batch_size=2, grad_accum=2, save_every=3, keep_checkpoints=0, eval_fraction=0.0)
    full = train(config(tiny, tmp_path / "full", **kw))
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "step-00000003", resumed_dir / "step-00000003")
    shutil.copy(tmp_path / "full" / "log.jsonl", resumed_dir / "log.jsonl")
    resumed = train(config(tiny, resumed_dir, resume="auto", **kw))
    a, b = DraftModel.from_pretrained(full).state_dict(), DraftModel.from_pretrained(resumed).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (resumed_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the steps after the checkpoint were dropped, then redone
    start = DraftModel.from_pretrained(tmp_path / "full" / "step-00000003").state_dict()
    assert any(not torch.equal(a[k], start[k]) for k in a)


def test_start_batch_continues_the_data_order(tiny, tmp_path):
    """A later stage with start_batch = k trains on the batches k, k+1, ... of the same seeded order."""
    cfg = config(tiny, tmp_path / "a", max_steps=1)
    run = Run(cfg)
    later = Run(config(tiny, tmp_path / "b", max_steps=1, start_batch=5, init_from=None))
    seen = []
    for r in (run, later):
        original = r.terms
        r.terms = lambda draft, batch, gen, orig=original: seen.append(batch.indices) or orig(draft, batch, gen)
    for _ in range(6):
        run.train_step()
    later.train_step()
    assert seen[6] == seen[5] and seen[5] != seen[4]
    with pytest.raises(ValueError, match="start_batch must be >= 0"):
        config(tiny, tmp_path / "c", start_batch=-1)


def test_offline_features_give_the_online_losses(tiny, tmp_path):
    from train.data import read_prepared

    _, samples = read_prepared(tiny / "data.jsonl")
    target = LlamaForCausalLM.from_pretrained(tiny / "target", dtype=torch.bfloat16)
    write_features(target, samples, tmp_path / "feats", target_fingerprint(target.config, str(tiny / "target")),
                   shard_size=50, progress=False)
    online = Run(config(tiny, tmp_path / "on", target_dtype="bfloat16"))
    offline = Run(config(tiny, tmp_path / "off", target_dtype="bfloat16", features=str(tmp_path / "feats")))
    for group, exact in ((online.train_set[:1], True), (online.train_set[1:3], False)):
        batch = collate(group, 64)
        on, off = online.terms(online.draft, batch, None), offline.terms(offline.draft, batch, None)
        for t_on, t_off in zip(on, off):
            for key in ("loss", "reg", "cls", "topk", "acc"):
                if exact:  # one sample: the very same target forward, stored in the target's own dtype
                    assert torch.equal(t_on[key], t_off[key]), key
                else:  # a padded batch vs unpadded per-sample forwards: bf16 rounding only
                    torch.testing.assert_close(t_on[key], t_off[key], rtol=2e-2, atol=2e-2)


def test_feature_shards_resume_after_a_kill(tiny, tmp_path):
    samples = pattern_samples(40)
    target = LlamaForCausalLM.from_pretrained(tiny / "target")
    fp = target_fingerprint(target.config, str(tiny / "target"))
    folder = write_features(target, samples, tmp_path / "f", fp, shard_size=16, dtype=torch.float32, progress=False)
    shards = sorted(folder.glob("shard-*.safetensors"))
    assert len(shards) == 3
    before = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[1].unlink()  # killed while writing shard 1: its temporary file is left, the shard is not there
    (folder / f".{shards[1].name}.tmp").write_bytes(b"partial")
    with pytest.raises(FeatureStoreError, match="incomplete"):
        FeatureStore(folder, fp, samples)
    write_features(target, samples, folder, fp, shard_size=16, dtype=torch.float32, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("shard-*.safetensors"))}
    assert after.keys() == before.keys()
    assert after[shards[0].name] == before[shards[0].name] and after[shards[2].name] == before[shards[2].name]
    store = FeatureStore(folder, fp, samples)
    for i in (0, 17, 39):
        ids = torch.tensor([samples[i]["input_ids"]])
        torch.testing.assert_close(store.get(i), compute_features(target, ids, torch.ones_like(ids))[0])
    assert store.get(17, 5).shape == (5, 64)
    other = target_fingerprint(LlamaForCausalLM.from_pretrained(tiny / "other_target").config, "other_target")
    with pytest.raises(FeatureStoreError, match="another target"):
        write_features(target, samples, folder, other, shard_size=16, dtype=torch.float32, progress=False)
    with pytest.raises(FeatureStoreError, match="another data file"):
        FeatureStore(folder, fp, samples[:-1])


def test_features_refuse_a_disk_too_small_before_writing_anything(tiny, tmp_path, monkeypatch):
    import shutil as shutil_module

    samples = pattern_samples(10)
    target = LlamaForCausalLM.from_pretrained(tiny / "target")
    fp = target_fingerprint(target.config, str(tiny / "target"))
    need = sum(len(s["input_ids"]) for s in samples) * 64 * 2  # bf16 features
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: shutil_module._ntuple_diskusage(10**9, 10**9, need - 1))
    with pytest.raises(OSError, match=r"not enough disk .*GiB needed, .*GiB free"):
        write_features(target, samples, tmp_path / "f", fp, progress=False)
    assert not (tmp_path / "f").exists()  # no folder, no index: nothing half-written


def test_bad_inputs_fail_before_training(tiny, tmp_path):
    narrow = DraftModel.from_target_config(LlamaForCausalLM.from_pretrained(tiny / "narrow_target").config)
    narrow.save_pretrained(tmp_path / "narrow_draft")
    with pytest.raises(DraftMismatchError, match="hidden_size"):
        Run(config(tiny, tmp_path / "a", init_from=str(tmp_path / "narrow_draft")))

    empty = [dict(s, loss_mask=[0] * len(s["loss_mask"])) for s in pattern_samples(5)]
    write_prepared(tmp_path / "empty.jsonl", {"tokenizer": "none"}, empty)
    with pytest.raises(ValueError, match="no usable record"):
        Run(config(tiny, tmp_path / "b", data=str(tmp_path / "empty.jsonl")))

    from train.data import read_prepared

    _, samples = read_prepared(tiny / "data.jsonl")
    other = LlamaForCausalLM.from_pretrained(tiny / "other_target")
    write_features(other, samples, tmp_path / "other_feats",
                   target_fingerprint(other.config, str(tiny / "other_target")), progress=False)
    with pytest.raises(FeatureStoreError, match="another target"):
        Run(config(tiny, tmp_path / "c", features=str(tmp_path / "other_feats")))

    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="not a writable folder"):
        Run(config(tiny, tmp_path / "a_file" / "out"))
    assert not any(tmp_path.glob("*/log.jsonl"))


@pytest.mark.slow
def test_deepspeed_two_cpu_processes_train_and_resume(tiny, tmp_path):
    """ZeRO-2 over gloo with 2 CPU processes: a few steps, a checkpoint HassModel loads, and an exact resume."""
    launcher = Path(sys.executable).parent / "deepspeed"

    def launch(out: Path, *extra: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [str(launcher), "--num_accelerators", "2", "--master_port", str(port), "--module", "train.trainer",
               "--target", str(tiny / "target"), "--data", str(tiny / "data.jsonl"), "--output_dir", str(out),
               "--deepspeed", str(ROOT / "configs" / "ds_config.json"), "--max_steps", "4", "--batch_size", "2",
               "--grad_accum", "2", "--target_dtype", "float32", "--plot", "false", "--threads", "1",
               "--save_every", "2", "--keep_checkpoints", "0", "--eval_fraction", "0.05", "--lr", "1e-3", *extra]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    launch(tmp_path / "ds")
    final = tmp_path / "ds" / "final"
    log = [json.loads(line) for line in (tmp_path / "ds" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["split"] == "train"] == [1, 2, 3, 4]
    assert (final / "deepspeed").is_dir()
    model = HassModel.from_pretrained(tiny / "target", final, dtype=torch.float32)
    assert model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4).new_tokens == 4

    (tmp_path / "again").mkdir()
    shutil.copytree(tmp_path / "ds" / "step-00000002", tmp_path / "again" / "step-00000002")
    launch(tmp_path / "again", "--resume", "auto")
    a = DraftModel.from_pretrained(final).state_dict()
    b = DraftModel.from_pretrained(tmp_path / "again" / "final").state_dict()
    middle = DraftModel.from_pretrained(tmp_path / "ds" / "step-00000002").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], middle[k]) for k in a)


def test_compare_runs_plots_stages_end_to_end(tmp_path, capsys):
    from train.compare_runs import main as compare_main

    for run, accs in (("a", [0.1, 0.2, 0.3]), ("b", [0.15, 0.25, 0.35])):
        for n, acc in enumerate(accs, start=1):
            folder = tmp_path / run / f"stage{n}"
            folder.mkdir(parents=True)
            records = [{"step": s, "split": "train", "loss": 1.0} for s in (1, 2)]
            records.append({"step": 2, "split": "eval", "acc_s1": acc, "acc_s2": acc / 2})
            (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "cmp.png"
    compare_main(["--run", f"A={tmp_path / 'a'}", "--run", f"B={tmp_path / 'b'}", "--out", str(out)])
    assert out.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "A stage3: step 6, held-out top-1 0.300 / 0.150" in printed  # steps counted across stages
    with pytest.raises(SystemExit):
        compare_main(["--run", f"A={tmp_path / 'missing'}", "--out", str(out)])
    with pytest.raises(SystemExit):
        compare_main(["--run", f"A={tmp_path}", "--out", str(out)])  # no stage folders


def test_gradients_are_clipped_by_value_by_default_and_by_norm_on_request(tiny, tmp_path):
    def grads_at_step(**kw):
        run = Run(config(tiny, tmp_path / "clip", max_steps=1, grad_clip=1e-4, eval_fraction=0.0, **kw))
        seen = {}
        step = run.optimizer.step

        def spy(*a, **k):
            g = torch.cat([p.grad.flatten() for p in run.draft.parameters() if p.grad is not None])
            seen["max"], seen["norm"] = float(g.abs().max()), float(g.norm())
            return step(*a, **k)

        run.optimizer.step = spy
        record = run.train_step()
        return seen, record

    by_value, record = grads_at_step()
    assert by_value["max"] <= 1e-4 + 1e-12 and by_value["norm"] > 1e-4  # element-wise, not the norm
    assert record["grad_norm"] > by_value["norm"]  # the log keeps the norm before clipping
    by_norm, _ = grads_at_step(clip_mode="norm")
    assert by_norm["norm"] == pytest.approx(1e-4, rel=1e-3)
    with pytest.raises(ValueError, match="clip_mode"):
        config(tiny, tmp_path / "x", clip_mode="sign")


def test_the_draft_layer_can_start_as_the_targets_last_layer(tiny, tmp_path):
    run = Run(config(tiny, tmp_path / "init", max_steps=1, init_layer="target"))
    last = run.target.get_decoder().layers[-1].state_dict()
    mine = run.draft.layers[0].state_dict()
    for key, value in last.items():
        if not key.startswith("input_layernorm."):
            assert torch.equal(mine[key], value.float()), key
    fresh = Run(config(tiny, tmp_path / "fresh", max_steps=1))
    assert not torch.equal(fresh.draft.layers[0].mlp.down_proj.weight, run.draft.layers[0].mlp.down_proj.weight)
    assert torch.equal(fresh.draft.fc.weight, run.draft.fc.weight)  # the fc layer keeps its initialisation
    with pytest.raises(ValueError, match="init_layer"):
        config(tiny, tmp_path / "x", init_layer="first")


def test_a_draft_trained_over_a_vocabulary_drafts_over_it_by_default(tiny, tmp_path):
    from hass.draft_vocab import load_token_counts, top_tokens

    final = train(config(tiny, tmp_path / "vocab", max_steps=3, draft_vocab_size=40, eval_fraction=0.05))
    saved = json.loads((final / "config.json").read_text())
    assert saved["draft_vocab_size"] == 40
    counts = load_token_counts(final)
    assert counts.numel() == 128 and int(counts.sum()) > 0
    records = [json.loads(line) for line in (tmp_path / "vocab" / "log.jsonl").read_text().splitlines()]
    assert all(0 <= r["outside"] <= 1 for r in records)
    model = HassModel.from_pretrained(tiny / "target", final, dtype=torch.float32)
    assert torch.equal(model.draft_vocab, top_tokens(counts, 40))
    assert HassModel.from_pretrained(tiny / "target", final, dtype=torch.float32, draft_vocab_size=20).draft_vocab.numel() == 20
    assert HassModel.from_pretrained(tiny / "target", final, dtype=torch.float32, draft_vocab_size="all").draft_vocab is None
    plain = HassModel.from_pretrained(tiny / "target", None, dtype=torch.float32)
    prompt = torch.tensor([[1, 2, 3, 4, 5]])
    assert torch.equal(model.generate(prompt, max_new_tokens=10).sequences,
                       plain.generate(prompt, max_new_tokens=10).sequences)  # still the target's own output
    with pytest.raises(ValueError, match="below hod_k"):
        config(tiny, tmp_path / "x", draft_vocab_size=5)


def test_train_bench_times_every_setting_on_the_same_batches(tiny, tmp_path, capsys):
    from train import bench

    out = tmp_path / "bench.json"
    bench.main(["--target", str(tiny / "target"), "--data", str(tiny / "data.jsonl"), "--steps", "1",
                "--vocab", "40", "--hca-steps", "3,1", "--max-length", "64", "--init-from", "none", "--out", str(out)])
    printed = capsys.readouterr().out.strip().splitlines()
    rows = json.loads(out.read_text())["rows"]
    assert [r["setting"] for r in rows] == [f"n={n} {f} {v}" for n in (3, 1) for f in ("online", "offline")
                                           for v in ("V", "N=40")]
    assert all(r["tokens_per_s"] > 0 and 0 <= r["acc"] <= 1 for r in rows)
    assert rows[0]["ratio"] == 1.0 and rows[4]["ratio"] == 1.0  # today's recipe is the reference of its n
    assert printed[-1].startswith("hass n=3: ") and ", eagle2 n=1: " in printed[-1]
    with pytest.raises(SystemExit):
        bench.main(["--target", str(tiny / "target"), "--data", str(tmp_path / "missing.jsonl")])


def test_resuming_with_other_settings_or_data_is_refused_naming_them(tiny, tmp_path):
    kw = dict(max_steps=2, save_every=1, eval_fraction=0.0)
    train(config(tiny, tmp_path / "run", **kw))
    with pytest.raises(ValueError, match=r"lr: 0.003 there, 0.001 now"):
        train(config(tiny, tmp_path / "run", resume="auto", **dict(kw, lr=1e-3)))
    other = tmp_path / "other.jsonl"
    write_prepared(other, {"tokenizer": "none", "max_length": 64}, pattern_samples(120, seed=9))
    with pytest.raises(ValueError, match="data: .* there, .* now.*token ids differ|token ids differ"):
        train(config(tiny, tmp_path / "run", resume="auto", **dict(kw, data=str(other))))
    with pytest.raises(ValueError, match="target: .*target.* there, .*other_target.* now"):
        train(config(tiny, tmp_path / "run", resume="auto", **dict(kw, target=str(tiny / "other_target"))))
    # how often it saves or evaluates may change
    train(config(tiny, tmp_path / "run", resume="auto", **dict(kw, save_every=2)))


def test_eval_data_is_held_out_from_training_and_evaluated(tiny, tmp_path):
    samples = pattern_samples(120)
    held = tmp_path / "held.jsonl"
    write_prepared(held, {"tokenizer": "none", "max_length": 64}, samples[:10])  # ids "0".."9"
    run = Run(config(tiny, tmp_path / "run", max_steps=2, eval_data=str(held)))
    assert {s["id"] for s in run.eval_set} == {str(i) for i in range(10)}
    assert not {s["id"] for s in run.train_set} & {str(i) for i in range(10)}
    assert len(run.train_set) == 110
    record = run.evaluate()
    assert 0 <= record["acc_s3"] <= 1
    with pytest.raises(ValueError, match="eval_data"):
        Run(config(tiny, tmp_path / "x", eval_data=str(tmp_path / "missing.jsonl")))


def test_the_targets_full_top1_is_kept_per_sample_and_resumed(tiny, tmp_path):
    """With offline features and a draft vocabulary, the first sight of a sample stores its target top-1 over the
    whole vocabulary; later batches skip that projection with the same terms, and a resumed run has the store."""
    from train.data import read_prepared

    _, samples = read_prepared(tiny / "data.jsonl")
    target = LlamaForCausalLM.from_pretrained(tiny / "target", dtype=torch.float32)
    write_features(target, samples, tmp_path / "feats", target_fingerprint(target.config, str(tiny / "target")),
                   dtype=torch.float32, progress=False)
    cfg = config(tiny, tmp_path / "run", features=str(tmp_path / "feats"), draft_vocab_size=40, max_steps=4,
                 save_every=2, keep_checkpoints=1)
    run = Run(cfg)
    batch = collate(run.train_set[:3], 64)
    first = run.terms(run.draft, batch, None)
    assert set(run.top1) == set(batch.indices)
    for i, part in zip(batch.indices, first[0]["target_top1"].split(
            [len(run.top1[i]) for i in batch.indices])):
        assert torch.equal(run.top1[i].long(), part)
    calls = []
    head = run.target.get_output_embeddings()
    hook = head.register_forward_hook(lambda *a: calls.append(1))
    again = run.terms(run.draft, batch, None)
    hook.remove()
    assert calls == []  # the full lm_head did not run again
    for a, b in zip(first, again):
        for key in ("loss", "reg", "cls", "topk", "acc", "outside"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)
    train(dataclasses.replace(cfg, max_steps=4, stop_at=2))
    resumed = Run(cfg)
    resumed.load(tmp_path / "run" / "step-00000002")
    assert len(resumed.top1) >= 2 * cfg.batch_size and all(v.dtype == torch.int32 for v in resumed.top1.values())


def test_a_new_run_on_the_same_features_starts_with_the_shared_top1(tiny, tmp_path):
    """A warm start or a control (a new output folder, the same features, data and draft vocabulary) reads the
    top-1 store an earlier run left beside the features; another vocabulary size does not."""
    from train.data import read_prepared

    _, samples = read_prepared(tiny / "data.jsonl")
    target = LlamaForCausalLM.from_pretrained(tiny / "target", dtype=torch.float32)
    feats = tmp_path / "feats"
    write_features(target, samples, feats, target_fingerprint(target.config, str(tiny / "target")),
                   dtype=torch.float32, progress=False)
    cfg = config(tiny, tmp_path / "first", features=str(feats), draft_vocab_size=40, max_steps=3, save_every=2)
    train(cfg)
    shared = feats / "target_top1_N40.pt"
    assert shared.is_file() and not list(feats.glob(".*.tmp"))
    first = torch.load(shared, weights_only=True)["top1"]
    later = Run(dataclasses.replace(cfg, output_dir=str(tmp_path / "second")))
    assert set(later.top1) == set(first) and all(torch.equal(later.top1[i], first[i]) for i in first)
    other = Run(dataclasses.replace(cfg, output_dir=str(tmp_path / "third"), draft_vocab_size=30))
    assert other.top1 == {}
