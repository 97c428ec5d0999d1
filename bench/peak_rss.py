"""Materialize a Delta table into Redis in this process; print its peak resident memory.

The peak is the kernel's high-water mark of this process's own address space (`VmHWM`). `ru_maxrss` is not
used: Linux carries it across `execve`, so a child started by a large parent would report the parent's size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.run import materialize


def high_water_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("/proc/self/status has no VmHWM line")


def main(url: str, uri: str) -> None:
    seconds, rows = materialize(url, uri)
    print(json.dumps({"peak_rss_mb": high_water_mb(), "rows": rows, "rows_per_s": round(rows / seconds)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
