"""What TensorBoard shows of nnlab's runs, seen in a real browser: trains a few short runs, starts
TensorBoard over them on 127.0.0.1, opens its tabs in headless Chromium through Playwright and
saves a PNG of each (docs/figures/dashboards/ by default).

    python scripts/dashboard_screenshots.py                     # the runs, then every screenshot
    python scripts/dashboard_screenshots.py --runs outputs/dashboards --no-train   # reuse the runs

Needs Playwright (`pip install -e ".[docs]"`) and a Chromium from the system's packages
(`apt-get install chromium`); Playwright drives it through `executable_path`, so no browser is
downloaded. The runs, in `--runs`:

- `sweep/`: `nnlab-train -m optimizer.lr=0.1,0.01,0.001` (the HParams table of a sweep);
- `mixed/`: a default run, a GAN, an autoencoder and a SOM (each run's own metrics in HParams);
- the default run also gives the first screen of Time Series, the Text tab, and the autoencoder
  the Images tab.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ("callbacks.progress=null",)  # (not a hyperparameter: the HParams tab leaves callbacks out)
SHORT = "trainer.max_epochs=5"  # the experiments' other pictures need no more to show
MIXED = {  # run folder -> overrides
    "default": (),  # nnlab-train as installed
    "gan": ("experiment=digits_gan", SHORT),
    "autoencoder": ("experiment=digits_autoencoder", SHORT),
    "som": ("experiment=digits_som", SHORT),
}
# (file name, logdir under --runs, URL fragment, what the page shows, column header clicked first)
SHOTS = (
    (
        "hparams_sweep.png",
        "sweep",
        "#hparams",
        "HParams table of the 3-trial optimizer.lr sweep, by val/acc",
        "val/acc",
    ),
    ("hparams_mixed.png", "mixed", "#hparams", "HParams over a default run, a GAN, an autoencoder and a SOM", None),
    ("timeseries_default.png", "mixed/default", "#timeseries", "the first screen of Time Series, default run", None),
    ("images_autoencoder.png", "mixed/autoencoder", "#images", "the Images tab of the autoencoder", None),
    ("text_default.png", "mixed/default", "#text", "the Text tab of the default run", None),
)


def train(runs: Path) -> None:
    """The runs the screenshots show, each in its own folder under `runs` (replaced)."""
    shutil.rmtree(runs, ignore_errors=True)
    commands = [["-m", "optimizer.lr=0.1,0.01,0.001", f"hydra.sweep.dir={runs / 'sweep'}"]]  # as in the README
    commands += [[*extra, f"hydra.run.dir={runs / 'mixed' / name}"] for name, extra in MIXED.items()]
    for args in commands:
        argv = [sys.executable, "-m", "nnlab.commands.train", *args, *QUIET]
        print("+", " ".join(argv[2:]), flush=True)
        subprocess.run(argv, check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_tensorboard(logdir: Path, port: int) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
    return subprocess.Popen([*argv, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for_runs(port: int, timeout_s: float = 120) -> list[str]:
    """The runs TensorBoard lists once it has loaded the logdir (its HTTP API, polled)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as response:
                runs = json.loads(response.read())
            if runs:
                time.sleep(2)  # the plugins read the files after the run list appears
                return runs
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"TensorBoard on port {port} listed no run within {timeout_s:.0f} s")


def shoot(url: str, path: Path, chromium: str, settle_s: float, sort_by: str | None) -> None:
    """One screenshot of `url` in headless Chromium, at a laptop's window size; with `sort_by`,
    the HParams table is first sorted by that column, highest first (its Sorting menus)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(url, wait_until="networkidle")
        page.wait_for_timeout(settle_s * 1000)  # charts draw after their data arrives
        if sort_by:
            page.locator("paper-dropdown-menu[label='Sort by']").click()
            page.locator("paper-item", has_text=sort_by).first.click()
            page.locator("paper-dropdown-menu[label='Direction']").click()
            page.locator("paper-item", has_text="Descending").first.click()
            page.wait_for_timeout(1000)
        page.screenshot(path=str(path))
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=REPO / "outputs" / "dashboards", help="where the runs live")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "dashboards", help="PNG folder")
    parser.add_argument("--no-train", action="store_true", help="reuse the runs already in --runs")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--settle", type=float, default=6.0, help="seconds a page gets to draw")
    parser.add_argument("--only", nargs="*", help="file names of SHOTS to take (default: all)")
    args = parser.parse_args(argv)
    try:
        import playwright  # noqa: F401
    except ImportError:
        parser.error('needs Playwright: pip install -e ".[docs]" (and a Chromium: apt-get install chromium)')
    if not Path(args.chromium).is_file():
        parser.error(f"no Chromium at {args.chromium}: apt-get install chromium, or give --chromium PATH")
    if not args.no_train:
        train(args.runs)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, logdir, fragment, what, sort_by in SHOTS:
        if args.only and name not in args.only:
            continue
        port = free_port()
        server = start_tensorboard(args.runs / logdir, port)
        try:
            wait_for_runs(port)
            shoot(f"http://127.0.0.1:{port}/{fragment}", args.out / name, args.chromium, args.settle, sort_by)
            print(f"{args.out / name}: {what}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
