"""``droplab bench --device cuda``: its arithmetic on the CPU, the run itself on a GPU.

The timings themselves are never asserted; these tests check what turns a time
into a figure (bytes moved, bandwidth, ratios, % of copy), that the command
fails clearly without CUDA, and, on a GPU, that every part runs and reports.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from droplab import cli
from droplab.cli import bench
from droplab.cli import bench_cuda as cuda_bench

SECONDS = {
    "fwd_droplab": 2e-3,
    "fwd_torch": 3e-3,
    "fwd_copy": 1.8e-3,
    "fb_droplab": 5e-3,
    "fb_torch": 10e-3,
    "fb_copy": 4e-3,
}


@pytest.mark.parametrize(
    ("dtype", "itemsize"),
    [(torch.float32, 4), (torch.bfloat16, 2), (torch.float16, 2), (torch.float64, 8)],
)
def test_effective_bytes_counts_each_pass_over_the_tensor(
    dtype: torch.dtype, itemsize: int
) -> None:
    n = 3 << 20
    assert cuda_bench.effective_bytes(n, dtype, "forward") == 2 * n * itemsize
    assert cuda_bench.effective_bytes(n, dtype, "forward_backward") == 4 * n * itemsize


def test_effective_bytes_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"kind must be one of .*got 'backward'"):
        cuda_bench.effective_bytes(4, torch.float32, "backward")


def test_bandwidth() -> None:
    assert cuda_bench.bandwidth(8e9, 2e-3) == pytest.approx(4e12)
    assert math.isnan(cuda_bench.bandwidth(1.0, 0.0))


def test_size_row_ratios_and_percent_of_copy() -> None:
    n = 1 << 28
    row = cuda_bench.size_row(n, torch.bfloat16, SECONDS)
    assert row["log2n"] == 28 and row["dtype"] == "bfloat16"
    # Forward moves 2 x n x 2 bytes; forward+backward twice that.
    assert row["fwd_droplab_gbs"] == pytest.approx(4 * n / 2e-3 / 1e9)
    assert row["fb_copy_gbs"] == pytest.approx(8 * n / 4e-3 / 1e9)
    assert row["fwd_torch_over_droplab"] == pytest.approx(1.5)
    assert row["fb_torch_over_droplab"] == pytest.approx(2.0)
    assert row["fwd_copy_pct"] == pytest.approx(90.0)
    assert row["fb_copy_pct"] == pytest.approx(80.0)
    assert row["fwd_droplab_ms"] == pytest.approx(2.0)
    # Ratios on the same bytes equal ratios of bandwidths.
    assert row["fwd_copy_pct"] == pytest.approx(
        100 * row["fwd_droplab_gbs"] / row["fwd_copy_gbs"]
    )


def test_size_row_with_missing_contenders_and_odd_sizes() -> None:
    row = cuda_bench.size_row(1000, torch.float32, {"fwd_droplab": 1e-6})
    assert row["log2n"] is None
    assert "fwd_torch_over_droplab" not in row and "fb_droplab_ms" not in row
    table = cuda_bench.format_size_table([row])
    assert table.splitlines()[-1].startswith("| 1000 | float32 | 0.001 |")
    assert "nan" in table  # what was not measured shows as nan, not as a number


def test_format_size_table_has_one_line_per_row() -> None:
    rows = [cuda_bench.size_row(1 << e, torch.float16, SECONDS) for e in range(20, 23)]
    lines = cuda_bench.format_size_table(rows).splitlines()
    assert len(lines) == 2 + 3
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        "2^20",
        "2^21",
        "2^22",
    ]


def test_saved_bytes_on_the_cpu_device_argument() -> None:
    saved = bench.saved_bytes(n=1 << 12, device="cpu")
    assert saved["droplab"] == 0
    assert saved["torch"] >= 1 << 12  # torch keeps at least a byte-per-element mask


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_bench_on_cuda_without_a_gpu_fails_clearly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["bench", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda needs a CUDA device" in err
    assert "--device cpu" in err
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        cuda_bench.cuda_median_seconds({"noop": lambda: None})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit")
@pytest.mark.skipif(shutil.which("bash") is None, reason="the script is bash")
def test_gpu_check_script_stops_at_once_without_a_gpu(tmp_path: Path) -> None:
    # The dry run of benchmarks/gpu_check.sh on a CPU machine: a clear message
    # and exit code 3, not a hang (the timeout only guards against one).
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"
    done = subprocess.run(
        ["bash", str(script), str(tmp_path / "out")],
        env=dict(os.environ, PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3
    assert "no CUDA device is visible to torch here" in done.stdout
    assert (tmp_path / "out" / "gpu_check.log").exists()


def test_bench_rejects_bad_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["bench", "--device", "cuda", "--min-log2", "9", "--max-log2", "3"])
        == 2
    )
    assert "argument --max-log2: must be >= --min-log2 (9); got 3" in (
        capsys.readouterr().err
    )


@pytest.mark.gpu
def test_cuda_bench_runs_every_part(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = cli.main(
        [
            "bench",
            "--device",
            "cuda",
            "--min-log2",
            "16",
            "--max-log2",
            "17",
            "--repeats",
            "2",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert results["device"] == torch.cuda.get_device_name(0)
    assert [(r["log2n"], r["dtype"]) for r in results["sizes"]] == [
        (e, d) for d in ("float32", "bfloat16", "float16") for e in (16, 17)
    ]
    for row in results["sizes"]:
        for part in ("fwd", "fb"):
            assert row[f"{part}_droplab_ms"] > 0 and row[f"{part}_copy_pct"] > 0
    assert results["saved"]["droplab"] == 0
    assert results["mc"]["droplab_ms"] > 0
    assert "captured" in results["graph"]
    assert "compiles" in results["compiled"]
