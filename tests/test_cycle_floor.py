"""evaluation.cycle_floor: the compute floor of a verification's extra rows."""
import json

import pytest

from conftest import tiny_config, tiny_target
from evaluation.cycle_floor import extra_rows_floor_ms, linear_macs_per_token, main


def test_macs_match_the_layer_shapes(family):
    cfg = tiny_config(family)
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q = cfg.num_attention_heads * head_dim
    kv = cfg.num_key_value_heads * head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i  # q, k, v, o; gate, up, down
    expected = layers * per_layer + cfg.vocab_size * h
    assert linear_macs_per_token(cfg) == expected
    # the same count as the real model's parameters in those layers (embeddings and norms left out)
    model = tiny_target(family)
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("proj.weight"))
    assert linear_macs_per_token(cfg) == weights + model.get_output_embeddings().weight.numel()


def test_floor_grows_with_the_extra_rows_only():
    assert extra_rows_floor_ms(10**8, 1e11, 1) == 0.0
    one = extra_rows_floor_ms(10**8, 1e11, 2)
    assert one == pytest.approx(2.0)  # 2e8 FLOP at 1e11 FLOP/s
    assert extra_rows_floor_ms(10**8, 1e11, 8) == pytest.approx(7 * one)
    with pytest.raises(ValueError, match="rows must be >= 1"):
        extra_rows_floor_ms(10**8, 1e11, 0)


def test_cli_writes_table_and_json(tmp_path, capsys):
    tiny_target("llama").save_pretrained(tmp_path / "target")
    out = tmp_path / "floor" / "floor.md"
    main(["--base", str(tmp_path / "target"), "--step-ms", "2.0", "--rows", "1,8", "--out", str(out)])
    data = json.loads((tmp_path / "floor" / "floor.json").read_text())
    assert data["rows"]["1"]["verify_over_step"] == 1.0
    assert data["rows"]["8"]["verify_over_step"] > 1.0
    assert "| 8 |" in out.read_text() and "| 8 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--base", str(tmp_path / "target"), "--step-ms", "2.0", "--rows", "a,b"])
