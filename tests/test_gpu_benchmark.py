"""benchmarks.gpu (the GPU twin's paths) runs end to end on the CPU in its small mode: the
loss under autocast matches fp32, DDP training steps lower a held-out loss for both recipes (the
frozen one trains fewer parameters), and the pipeline's Generator verbalizes every sample record."""

from __future__ import annotations

import json
import socket

from benchmarks import gpu


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gpu_benchmark_small_mode_on_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    out = tmp_path / "gpu.json"
    result = gpu.main(["--small", "--steps", "4", "--beams", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["backend"] == "gloo" and result["device"] == "cpu"
    # every record of the shipped sample: 737 across train/dev/test, 1,507 training pairs
    assert result["data"]["records"] == 737 and result["data"]["train_examples"] == 1507
    assert result["loss_rel_diff"] < 0.01
    full, frozen = result["train_full"], result["train_frozen15_emb"]
    assert full["loss_fell"] and frozen["loss_fell"]
    assert full["held_out_loss_after"] < full["held_out_loss_before"]
    assert frozen["trainable_parameters"] < full["trainable_parameters"]
    gen = result["generate"]
    assert gen["records"] == 737 and gen["failed"] == 0 and gen["beams_per_record"] == 2


def test_gpu_engine_check_small_mode_on_cpu(tmp_path, monkeypatch):
    """benchmarks.gpu_engine, the script left ready for a GPU: on the CPU it trains, exports the
    LM for serving (logits equal to the state LM's) and times the hf engine; the vLLM part says
    why it did not run."""
    from benchmarks import gpu_engine

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    out = tmp_path / "engine.json"
    argv = ["--small", "--steps", "3", "--records", "40", "--max-new-tokens", "8"]
    result = gpu_engine.main([*argv, "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["export_max_abs_logit_diff"] < 1e-4
    assert result["hf_greedy"]["records"] == 40 and result["hf_greedy"]["failed"] == 0
    assert result["vllm"].startswith("not run: no CUDA GPU")
