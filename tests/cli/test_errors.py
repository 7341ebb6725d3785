"""Bad arguments: one line naming the argument, the value and what is allowed,
exit status 2 (argparse's), and no work done: no folder written, no experiment
imported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from droplab import cli
from droplab.cli import _args


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err  # one line, no usage block, no traceback
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--data", "imagenet"], "droplab report: error: argument --data: "
         "must be one of digits, mnist1d, toy or mnist:DIR; got 'imagenet' "
         "(see droplab report --help)"),
        (["report", "--data", "mnist:/nonexistent"], "argument --data: must be "
         "mnist:DIR with DIR a folder of MNIST IDX files; got 'mnist:/nonexistent', "
         "and '/nonexistent' is not a folder"),
        (["report", "--jobs", "0"], "argument --jobs: must be an integer >= 1; got '0'"),
        (["report", "--jobs", "two"], "argument --jobs: must be an integer >= 1; "
         "got 'two'"),
        (["report", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        (["report", "--only", "masks,nope"], "argument --only: must be "
         "comma-separated names from masks, expectation,"),
        (["run", "nope"], "argument NAME: must be one of masks, expectation,"),
        (["run", "rate", "--data", "cifar"], "argument --data: must be one of"),
        (["bench", "--p", "1.5"], "droplab bench: error: argument --p: must be a real "
         "number in [0, 1); got '1.5'"),
        (["bench", "--p", "nan"], "argument --p: must be a real number in [0, 1); "
         "got 'nan'"),
        (["bench", "--repeats", "-1"], "argument --repeats: must be an integer >= 1; "
         "got '-1'"),
        (["bench", "--threads", "0"], "argument --threads: must be an integer >= 1"),
        (["bench", "--max-log2", "31"], "argument --max-log2: must be an integer in "
         "[1, 30]; got '31'"),
        (["nonsense"], "droplab: error: argument COMMAND: invalid choice: 'nonsense'"),
    ],
)  # fmt: skip
def test_bad_arguments_get_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    extra = ["--out", str(out)] if argv[0] in ("report", "run") else []
    line = _fails([*argv, *extra], capsys)
    assert message in line
    assert not out.exists()  # refused before any work


def test_mnist_folder_without_the_files_names_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    line = _fails(["report", "--data", f"mnist:{tmp_path}"], capsys)
    assert "lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte, " in line
    assert "train-images" not in line.split("lacks")[1]


def test_bench_log2_range_is_checked_before_timing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["bench", "--min-log2", "12", "--max-log2", "10"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "droplab bench: error: argument --max-log2: must be >= --min-log2 (12); "
        "got 10 (see droplab bench --help)"
    )


def test_the_light_paths_import_neither_torch_nor_matplotlib(tmp_path: Path) -> None:
    """--help, list and a refused argument, in a fresh interpreter."""
    probe = (
        "import sys\n"
        "from droplab import cli\n"
        "for argv in (['--help'], ['list', '--out', sys.argv[1]],\n"
        "             ['report', '--data', 'imagenet'], ['report', '--help']):\n"
        "    try:\n"
        "        cli.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'numba', 'scipy') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert "HEAVY []" in done.stdout, done.stdout[-500:]


def test_the_parser_copies_agree_with_the_library() -> None:
    from droplab.execution import EXECUTOR_HELP
    from droplab.lab.data import DATASETS

    assert _args.EXECUTOR_HELP == EXECUTOR_HELP
    assert (*_args.DATA_NAMES, "mnist:DIR") == DATASETS


def test_expected_time_is_printed_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert cli.main(["report", "--preset", "quick", "--only", "gradients",
                     "--out", str(out)]) == 0  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(
        "droplab report: quick preset, 1 experiment; expected time:"
    )
    # a range, from this machine's measured speed and load; the end says how it went
    assert re.search(r"expected time: \d+( min)?( \d+)?( s)? to \d+ (s|min)", err[0]), (
        err[0]
    )
    assert "measured: this machine now" in err[0]
    assert re.match(r"took \d+ s(, more than| \(expected)", err[-1]), err[-1]
    assert cli.main(["report", "--preset", "quick", "--only", "gradients",
                     "--out", str(out)]) == 0  # fmt: skip
    assert "1 saved result reused" in capsys.readouterr().err
