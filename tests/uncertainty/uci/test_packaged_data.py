"""The UCI data shipped inside the package: equal to the source, found from anywhere."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from droplab._data import shipped_uci_datasets, uci_data_dir
from droplab.uncertainty.uci import protocol as uci
from droplab.uncertainty.uci.folder import load_uci_folder
from droplab.uncertainty.uci.summary import read_published

SOURCE = Path(__file__).resolve().parents[4] / "shared" / "data" / "uci-gal2016"
SHIPPED = ["bostonHousing", "concrete", "energy", "wine-quality-red", "yacht"]


def test_the_five_data_sets_are_shipped() -> None:
    assert shipped_uci_datasets() == SHIPPED
    readme = (uci_data_dir() / "README.md").read_text(encoding="utf-8")
    for words in ("UCI Machine Learning Repository", "CC BY 4.0", "Hernández-Lobato"):
        assert words in readme


@pytest.mark.skipif(not SOURCE.is_dir(), reason="../shared is not beside the checkout")
def test_the_packaged_copy_equals_the_source_bit_for_bit() -> None:
    source = sorted(
        p.relative_to(SOURCE).as_posix()
        for p in SOURCE.rglob("*")
        if p.is_file() and p.name != "README.md"
    )
    packed = sorted(
        p.relative_to(uci_data_dir()).as_posix().removesuffix(".gz")
        for p in uci_data_dir().rglob("*.gz")
    )
    assert packed == source
    for name in source:
        inflated = gzip.decompress((uci_data_dir() / f"{name}.gz").read_bytes())
        assert inflated == (SOURCE / name).read_bytes(), name


@pytest.mark.parametrize("name", SHIPPED)
def test_every_packaged_set_loads_with_its_published_numbers(name: str) -> None:
    folder = load_uci_folder(uci_data_dir() / name)
    assert folder.name == name and folder.n_splits == 20 and folder.n_hidden == 50
    published = read_published(uci_data_dir(), name)
    assert published is not None and sorted(published) == list(range(20))


def test_the_default_folder_is_the_packaged_one_unless_the_variable_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(uci.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # nothing to find beside the working directory
    assert uci.default_data_dir() == uci_data_dir()
    monkeypatch.setenv(uci.DATA_ENV, str(tmp_path))
    assert uci.default_data_dir() == tmp_path


def test_list_names_the_shipped_sets(capsys: pytest.CaptureFixture[str]) -> None:
    from droplab import cli

    assert cli.main(["uci", "--list"]) == 0
    assert capsys.readouterr().out.split() == SHIPPED


def test_dataset_is_required_without_list(capsys: pytest.CaptureFixture[str]) -> None:
    from droplab import cli

    with pytest.raises(SystemExit) as stopped:  # argparse: one of the two options
        cli.main(["uci"])
    assert stopped.value.code == 2
    assert (
        "one of the arguments --dataset --list is required" in capsys.readouterr().err
    )


def test_a_plain_text_folder_of_an_unshipped_set_still_works(tmp_path: Path) -> None:
    """--data DIR with a set the package does not have (plain, not gzipped)."""
    source = uci_data_dir() / "yacht"
    target = tmp_path / "my-yacht"
    target.mkdir()
    for packed in source.glob("*.gz"):
        (target / packed.name.removesuffix(".gz")).write_bytes(
            gzip.decompress(packed.read_bytes())
        )
    folder = load_uci_folder(target)
    shipped = load_uci_folder(source)
    assert folder.name == "my-yacht"
    assert (folder.data == shipped.data).all()


@pytest.mark.slow
def test_droplab_uci_runs_from_an_empty_directory(tmp_path: Path) -> None:
    """No variable, no ../shared: the packaged yacht, a tiny run, in a subprocess."""
    env = {k: v for k, v in os.environ.items() if k != uci.DATA_ENV}
    run = subprocess.run(
        [sys.executable, "-m", "droplab.cli", "uci", "--dataset", "yacht",
         "--splits", "0", "--epochs-multiplier", "0.05", "--samples", "20",
         "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "yacht" in run.stdout
    assert (tmp_path / "out" / "yacht" / "split_0.json").is_file()


def test_an_unknown_data_set_names_the_ones_there(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from droplab import cli

    assert cli.main(["uci", "--dataset", "kin8nm"]) == 2
    err = capsys.readouterr().err
    assert "no data set 'kin8nm' in" in err
    assert "bostonHousing, concrete, energy, wine-quality-red, yacht" in err
    assert "--data DIR" in err
