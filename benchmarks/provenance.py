"""What the benchmarks that write into the docs share: the machine and versions their numbers were
measured with, and the table a `--write` puts between a page's two markers (the rest of the page
is the author's and stays as it is)."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def environment(packages: Sequence[str]) -> dict[str, Any]:
    """The CPU's model name, core count, torch's thread count, the GPU (None on a CPU machine), the
    load average, the platform, and the installed version of each of `packages` (None: missing)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux
        pass
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "versions": versions,
    }


def write_between(doc: Path, start: str, end: str, table: str) -> None:
    """Replace the text between the markers `start` and `end` of `doc` with `table`; exit with the
    file's name when it does not hold exactly one `start` followed by one `end`."""
    text = doc.read_text(encoding="utf-8")
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        sys.exit(f"{doc}: expected one {start} followed by one {end}")
    before, rest = text.split(start)
    after = rest.split(end)[1]
    doc.write_text(f"{before}{start}\n{table}\n{end}{after}", encoding="utf-8")
