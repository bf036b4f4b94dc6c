"""Turn a pytest-benchmark JSON file into the markdown tables of RESULTS.md.

Usage: ``python benchmarks/to_markdown.py out.json [more.json ...] > tables.md``. One table per group, providers
side by side: mean, median, stddev, rounds, and the extra_info fields that matter (bytes, GB/s, peak memory).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} µs"


def tables(paths: list[str]) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        for bench in json.load(open(path))["benchmarks"]:
            groups[bench["group"] or bench["name"]].append(bench)
    out = []
    for group in sorted(groups):
        out.append(f"**{group}**\n")
        out.append("| provider | mean | median | stddev | rounds | extra |")
        out.append("|---|---|---|---|---|---|")
        for b in sorted(groups[group], key=lambda b: b["stats"]["mean"]):
            s, e = b["stats"], b.get("extra_info", {})
            extra = []
            if "bytes_moved" in e:
                extra.append(f"{e['bytes_moved']:,} B moved")
            for key in ("achieved_GBps",):
                if key in e:
                    extra.append(f"{e[key]:.1f} GB/s")
            if "peak_memory_bytes" in e:
                extra.append(f"peak {e['peak_memory_bytes'] / 2**20:,.0f} MiB ({e.get('peak_memory_kind', '')})")
            if "model_params" in e:
                extra.append(f"{e['model_params']:,} params")
            provider = e.get("provider", b["name"])
            out.append(
                f"| {provider} | {_time(s['mean'])} | {_time(s['median'])} | {_time(s['stddev'])} | {s['rounds']} "
                f"| {'; '.join(extra)} |"
            )
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(sys.argv[1:]))
