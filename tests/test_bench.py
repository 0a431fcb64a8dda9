import json

import pytest

from pruning_utils import bench


def test_variants_shrink_after_folding():
    variants = bench.build_variants("vgg16", width=0.125, keep_ratio=0.5)
    assert list(variants) == list(bench.VARIANTS)
    macs = {name: bench.count_macs(m, bench.MODELS["vgg16"]) for name, m in variants.items()}
    assert macs["folded"] < macs["mixed_alpha0"] < macs["original"]
    params = {name: bench.count_parameters(m) for name, m in variants.items()}
    assert params["folded"] < params["original"] < params["mixed_alpha0"]


def test_rows_speedups_and_ram():
    rows = bench.run(["vgg16"], width=0.0625, keep_ratio=0.5, batch_sizes=[1, 2], threads=1, min_run_time=0.01)
    assert {(r["variant"], r["batch_size"]) for r in rows} == {(v, b) for v in bench.VARIANTS for b in (1, 2)}
    assert all(r["cpu_s_per_image"] > 0 and r["threads"] == 1 for r in rows)
    largest = [r for r in rows if r["batch_size"] == 2]
    assert all(r["peak_rss_mb"] > r["rss_increase_mb"] > 0 for r in largest)
    assert all("peak_rss_mb" not in r for r in rows if r["batch_size"] == 1)
    gains = bench.speedups(rows)
    assert [g["batch_size"] for g in gains] == [1, 2] and all(g["mac_ratio"] > 1 for g in gains)
    assert gains[0]["efficiency"] == pytest.approx(gains[0]["speedup"] / gains[0]["mac_ratio"])


def test_command_line_writes_csv_and_json(tmp_path, capsys):
    assert bench.main(["--models", "autoencoder", "--width", "0.0625", "--batch-sizes", "1", "--min-run-time", "0.01",
                       "--threads", "1", "--no-ram", "--out", str(tmp_path)]) == 0
    assert "efficiency" in capsys.readouterr().out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["command"].startswith("python -m pruning_utils.bench") and record["machine"]["cpu_count"] >= 1
    assert len(record["rows"]) == 3 and (tmp_path / "bench.csv").read_text().startswith("model,variant,batch_size")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        bench.run(["resnet"])
    with pytest.raises(ValueError, match="keep ratio"):
        bench.build_variants("vgg16", keep_ratio=1.5)
    with pytest.raises(SystemExit):
        bench.main(["--keep-ratio", "0"])
