"""scripts/dashboard_screenshots.py: TensorBoard's tabs in a real browser (Chromium via Playwright)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import dashboard_screenshots  # noqa: E402


def test_a_missing_browser_is_named_with_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("needs Playwright (pip install -e '.[docs]')")
    with pytest.raises(SystemExit) as stop:
        dashboard_screenshots.main(["--chromium", str(tmp_path / "no-chromium"), "--runs", str(tmp_path), "--no-train"])
    assert stop.value.code == 2
    assert "apt-get install chromium" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing trained, nothing written


@pytest.mark.slow
def test_the_screenshots_are_pngs_of_the_tabs(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None or importlib.util.find_spec("playwright") is None:
        pytest.skip("needs Chromium (apt-get install chromium) and Playwright")
    out = tmp_path / "png"
    only = ["timeseries_default.png", "hparams_sweep.png"]
    assert dashboard_screenshots.main(["--runs", str(tmp_path / "runs"), "--out", str(out), "--only", *only]) == 0
    for name in only:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
