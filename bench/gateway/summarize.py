"""Summarize the wrk runs of scripts/bench-gateway.sh into a Markdown table and JSON.

Usage: summarize.py RESULTS_DIR. Each run is RESULTS_DIR/<scenario>-<target>-<round>.txt
(wrk --latency output). Per target and scenario, the median over rounds is reported.
"""
import json
import pathlib
import re
import statistics
import sys

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse(text):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {}
    for p, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        pct[int(p)] = float(value) * UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors:.*", text)
    return {
        "rps": rps,
        "p50_ms": pct.get(50),
        "p99_ms": pct.get(99),
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else None,
    }


def main():
    root = pathlib.Path(sys.argv[1])
    runs = {}
    for path in sorted(root.glob("*.txt")):
        scenario, target, _round = path.stem.split("-")
        run = parse(path.read_text())
        cpu = path.with_suffix(".cpu")
        run["cpu_us"] = float(cpu.read_text()) if cpu.exists() and cpu.read_text().strip() else None
        runs.setdefault((scenario, target), []).append(run)

    summary = {}
    for (scenario, target), results in runs.items():
        summary.setdefault(scenario, {})[target] = {
            "rps": statistics.median(r["rps"] for r in results),
            "p50_ms": statistics.median(r["p50_ms"] for r in results),
            "p99_ms": statistics.median(r["p99_ms"] for r in results),
            "cpu_us_per_request": (
                statistics.median(r["cpu_us"] for r in results if r["cpu_us"] is not None)
                if any(r["cpu_us"] is not None for r in results)
                else None
            ),
            "rps_per_round": [round(r["rps"]) for r in results],
            "rounds": len(results),
            "non2xx": sum(r["non2xx"] for r in results),
            "socket_errors": [r["socket_errors"] for r in results if r["socket_errors"]],
        }

    lines = []
    names = {
        "direct": "direct to upstream",
        "nginx": "nginx (Debian), public route",
        "gateway": "gateway, public route",
        "gatewayauth": "gateway, JWT-checked route",
        "baseline": "baseline gateway (BENCH_BASELINE_GATEWAY), public route",
    }
    for scenario, targets in summary.items():
        direct = targets.get("direct")
        lines.append(f"\n### {scenario}\n")
        lines.append(
            "| target | req/s (median) | req/s per round | p50 ms | p99 ms | added p50 ms | added p99 ms | proxy CPU µs/req |"
        )
        lines.append("|---|---:|---|---:|---:|---:|---:|---:|")
        for key in ["direct", "nginx", "gateway", "gatewayauth", "baseline"]:
            t = targets.get(key)
            if not t:
                continue
            added50 = t["p50_ms"] - direct["p50_ms"] if direct and key != "direct" else None
            added99 = t["p99_ms"] - direct["p99_ms"] if direct and key != "direct" else None
            fmt = lambda v: "" if v is None else f"{v:.3f}"
            cpu = "" if t["cpu_us_per_request"] is None else f"{t['cpu_us_per_request']:.1f}"
            per_round = " / ".join(str(v) for v in t["rps_per_round"])
            lines.append(
                f"| {names[key]} | {t['rps']:.0f} | {per_round} | {t['p50_ms']:.3f} | {t['p99_ms']:.3f} | {fmt(added50)} | {fmt(added99)} | {cpu} |"
            )
            t["added_p50_ms"], t["added_p99_ms"] = added50, added99
        if "nginx" in targets and "gateway" in targets:
            g, n = targets["gateway"], targets["nginx"]
            ratio = g["rps"] / n["rps"]
            lines.append(f"\nthroughput gateway / nginx: **{ratio:.2f}x**")
            if g["cpu_us_per_request"] and n["cpu_us_per_request"]:
                lines.append(
                    f"CPU per request gateway / nginx: {g['cpu_us_per_request'] / n['cpu_us_per_request']:.2f}x"
                )
            if n.get("added_p99_ms") is not None and g.get("added_p99_ms") is not None:
                lines.append(
                    f"added p99 gateway vs nginx: {g['added_p99_ms']:.3f} ms vs {n['added_p99_ms']:.3f} ms"
                )
        if "baseline" in targets and "gateway" in targets:
            g, b = targets["gateway"], targets["baseline"]
            if g["cpu_us_per_request"] and b["cpu_us_per_request"]:
                lines.append(
                    f"CPU per request gateway / baseline: {g['cpu_us_per_request'] / b['cpu_us_per_request']:.2f}x"
                )
        bad = {k: (t["non2xx"], t["socket_errors"]) for k, t in targets.items() if t["non2xx"] or t["socket_errors"]}
        if bad:
            lines.append(f"\nerrors: {bad}")

    text = "\n".join(lines)
    print(text)
    (root / "summary.md").write_text(text + "\n")
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
