"""Materialize a 10M-row Delta partition into Redis in this process; print its peak resident memory."""

from __future__ import annotations

import json
import resource
import sys

from bench.run import materialize


def main(url: str, uri: str) -> None:
    seconds, rows = materialize(url, uri)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mb": round(peak_kb / 1024, 1), "rows": rows, "rows_per_s": round(rows / seconds)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
