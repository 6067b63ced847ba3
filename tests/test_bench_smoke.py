"""Smoke test of `python -m fused_lstm.bench` on a tiny config: it runs and writes its reports."""

import json

import pytest
import torch

from fused_lstm import bench


def test_bench_command_writes_reports(tmp_path, capsys, device):
    argv = ["--device", device, "--configs", "tiny", "--reps", "2", "--warmup", "0",
            "--out", str(tmp_path)]
    report = bench.main(argv)
    out = capsys.readouterr().out

    jsons = list(tmp_path.glob("results-*.json"))
    mds = list(tmp_path.glob("results-*.md"))
    assert len(jsons) == 1 and len(mds) == 1
    stem = jsons[0].stem
    assert mds[0].stem == stem
    machine = report["machine"]
    name = machine["device_name"]
    if device == "cpu":  # CPU results name the vector ISA the kernels ran
        isa = machine["cpu_isa"]
        assert isa["aten"] == torch.backends.cpu.get_cpu_capability()
        assert isa["kernels"] == torch.ops.fused_lstm.cpu_kernels()
        label = bench.cpu_isa_label(isa)
        assert label.split("+")[0].split(" ")[0] in ("AVX512", "AVX2", "no-vector-ISA"), label
        name += "-" + label
        assert label in mds[0].read_text()
    assert stem == f"results-{bench._slug(name)}-{machine['date'][:10]}"

    data = json.loads(jsons[0].read_text())
    m = data["machine"]
    for key in ("device", "device_name", "cpu_model", "gpu_name", "torch_version",
                "cuda_version", "threads", "date", "command", "extension_loaded"):
        assert key in m, key
    assert m["device"] == device
    assert m["torch_version"] == torch.__version__
    assert m["command"] == "python -m fused_lstm.bench " + " ".join(argv)
    assert (m["gpu_name"] is not None) == (device == "cuda")

    (r,) = data["results"]
    assert r["config"] == "tiny" and "error" not in r
    assert r["max_rel_diff"] < 1e-4 and r["max_grad_rel_diff"] < 1e-4
    assert bench.disagreement(r) is None and "WARNING" not in out
    for mode in ("inference", "training"):
        e = r["modes"][mode]
        assert e["flops"] == bench.lstm_flops(bench.CONFIGS["tiny"], mode) > 0
        for impl in ("nn.LSTM", "FusedLSTM"):
            s = e[impl]
            assert len(s["times_s"]) == 2 and all(t > 0 for t in s["times_s"])
            assert s["min_s"] <= s["q1_s"] <= s["median_s"] <= s["q3_s"] <= s["max_s"]
            assert s["gflops"] == pytest.approx(e["flops"] / s["median_s"] / 1e9)
        assert e["ratio"] == pytest.approx(e["nn.LSTM"]["median_s"] / e["FusedLSTM"]["median_s"])
    assert r["modes"]["training"]["flops"] == 3 * r["modes"]["inference"]["flops"]
    peaks = r["peak_memory_bytes"]
    assert set(peaks) == {"nn.LSTM", "FusedLSTM"}
    # at least the gradients of the parameters and the input stay allocated
    grads = sum(p.numel() for p in torch.nn.LSTM(8, 8).parameters()) * 4 + 5 * 2 * 8 * 4
    assert all(v >= grads for v in peaks.values()), peaks
    assert set(data["summary"]) == {"inference", "training"}

    md = mds[0].read_text()
    assert "| tiny |" in md and "ratio" in md and "GFLOP/s" in md and "peak MiB" in md
    assert m["date"] in md and "geometric mean" in md
    assert "| tiny |" in out and "geometric mean" in out


def test_bench_flags_results_that_differ_from_nn_lstm():
    """A timing of wrong results is no result: the benchmark checks outputs and
    gradients against nn.LSTM's and reports configs beyond the tolerance."""
    cfg = bench.CONFIGS["tiny"]
    case = bench.build(cfg, "cpu")
    tol = bench.agreement_tolerance(cfg.dtype, "cpu")
    ok = {"config": "tiny", "tolerance": tol, "max_rel_diff": bench.max_rel_diff(case),
          "max_grad_rel_diff": bench.max_grad_rel_diff(case)}
    assert bench.disagreement(ok) is None and bench.disagreement_lines([ok]) == []

    nan_grads = dict(ok, max_grad_rel_diff=float("nan"))
    assert "gradients nan" in bench.disagreement(nan_grads)
    assert "outputs" not in bench.disagreement(nan_grads)

    with torch.no_grad():
        case.fused.weight_hh_l0.add_(0.1 * torch.randn_like(case.fused.weight_hh_l0))
    wrong = dict(ok, max_rel_diff=bench.max_rel_diff(case),
                 max_grad_rel_diff=bench.max_grad_rel_diff(case))
    assert wrong["max_rel_diff"] > tol and wrong["max_grad_rel_diff"] > tol
    (line,) = bench.disagreement_lines([wrong])
    assert line.startswith("WARNING: tiny:") and "outputs" in line and "gradients" in line


def test_flops_formula():
    c = bench.Config("x", T=3, B=2, I=5, H=7)
    assert bench.lstm_flops(c) == 2 * 3 * 2 * 28 * (5 + 7)
    bi = bench.Config("y", T=3, B=2, I=5, H=7, num_layers=2, bidirectional=True, proj_size=4)
    layer0 = 2 * 3 * 2 * 28 * (5 + 4) + 2 * 3 * 2 * 7 * 4
    layer1 = 2 * 3 * 2 * 28 * (8 + 4) + 2 * 3 * 2 * 7 * 4
    assert bench.lstm_flops(bi) == 2 * (layer0 + layer1)
    assert bench.lstm_flops(bi, "training") == 3 * bench.lstm_flops(bi)


def test_time_interleaved_alternates_order():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    times = bench.time_interleaved(fns, reps=3, warmup=1, device="cpu")
    assert [len(t) for t in times] == [3, 3]
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]


def test_quick_and_default_config_lists():
    assert "tiny" not in bench.default_configs("cpu") + bench.QUICK["cpu"]
    assert "big" not in bench.default_configs("cpu")
    assert "big" in bench.default_configs("cuda")
    with pytest.raises(SystemExit):
        bench.parse_args(["--configs", "nope"])


def test_cuda_runs_every_float32_shape_in_bfloat16_too():
    cuda = bench.default_configs("cuda")
    for name, c in bench.CONFIGS.items():
        if c.dtype == torch.float32 and not c.hidden:
            twin = bench.CONFIGS[f"{name}-bf16"]
            assert twin.dtype == torch.bfloat16 and twin.name in cuda
            assert (twin.T, twin.B, twin.I, twin.H, twin.num_layers) == (
                c.T, c.B, c.I, c.H, c.num_layers)
    assert not any(n.endswith("-bf16") for n in bench.default_configs("cpu"))


def test_tf32_flag():
    assert bench.parse_args(["--device", "cpu"]).tf32 == "off"
    assert bench.parse_args(["--device", "cpu", "--tf32", "on"]).tf32 == "on"
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--tf32", "maybe"])


def test_segments_bench_prints_its_three_tables(capsys, monkeypatch):
    from fused_lstm.bench import segments

    monkeypatch.setattr(segments, "SHAPES", [("tiny", 6, 3, 4, 5, 2, True)])
    monkeypatch.setattr(segments, "ROLLOUTS", [("tiny-rollout", 8, 2, 4, 5)])
    monkeypatch.setattr(segments, "ONE_STEP_SHAPES", [("B=2 H=5", 2, 5)])
    rows = segments.main(["--reps", "1", "--warmup", "0"])
    printed = capsys.readouterr().out
    assert "| tiny T=6 B=3 I=4 H=5 L=2 bidir | training |" in printed
    assert "| tiny-rollout T=8 B=2 I=4 H=5 | inference |" in printed
    assert "| B=2 H=5 | training |" in printed
    assert [(r["mode"], sorted(r["ms"])) for r in rows] == [
        ("inference", sorted(segments.WAYS)), ("training", sorted(segments.WAYS)),
        ("inference", sorted(segments.RESET_WAYS)), ("training", sorted(segments.RESET_WAYS)),
        ("inference", sorted(segments.ONE_STEP_WAYS)),
        ("training", sorted(segments.ONE_STEP_WAYS))]
    assert all(v > 0 for r in rows for v in r["ms"].values())


def test_variants_bench_quick(tmp_path, capsys):
    """`python -m fused_lstm.bench.variants --quick`: every variant timed three ways, the
    user's loop agreeing with FusedLSTM, the table and the targets printed, the JSON named
    after the CPU and its vector ISA."""
    from fused_lstm.bench import variants

    report = variants.main(["--quick", "--reps", "1", "--warmup", "0", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    (path,) = tmp_path.glob("variants-*.json")
    assert path.name == variants.default_out_name(report["machine"])
    if report["machine"]["device"] == "cpu":
        assert bench.cpu_isa_label(report["machine"]["cpu_isa"]) in printed
    data = json.loads(path.read_text())
    assert data["machine"]["command"].startswith("python -m fused_lstm.bench.variants --quick")
    rows = data["results"]
    assert [r["variant"] for r in rows] == [name for name, _ in variants.VARIANTS]
    assert data["complete"] and data["check_failed"] == [] and all(r["check"]["ok"] for r in rows)
    for r in rows:
        assert r["check"]["max_abs_diff"] < variants.CHECK_TOLERANCE and r["check"]["ok"]
        assert r["check"]["max_abs_diff_float64"] < variants.CHECK_TOLERANCE_64
        assert r["check"].get("grad_rel_diff", 0) < 1e-4
        for mode in ("training", "inference"):
            e = r["modes"][mode]
            assert all(e[k]["median_s"] > 0 for k in ("plain", "variant", "user"))
            assert e["cost"] == pytest.approx(e["variant"]["median_s"] / e["plain"]["median_s"])
            assert e["speedup"] == pytest.approx(e["user"]["median_s"] / e["variant"]["median_s"])
            assert ("speedup" in e["targets"]) == (mode == "training")
            assert f"| tiny-bidir | {r['variant']} | {mode} |" in printed
    assert "targets:" in printed and "check: eval-mode outputs" in printed
