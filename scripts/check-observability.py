#!/usr/bin/env python3
"""Keeps the dashboard, the alert rules and the operations guide true to the code.

- every metric named in deploy/observability/alerts.yaml and grafana-dashboard.json is one the
  services emit (a `counter!`/`gauge!`/`histogram!` name in services/*/src);
- every metric the services emit is described in docs/operations.md;
- every alert has a severity, a summary and a runbook link to a section of docs/operations.md
  that exists.

Prints one line per problem and ends with 'N passed, N failed'; exits non-zero on any failure.
"""

import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "docs" / "operations.md"
ALERTS = ROOT / "deploy" / "observability" / "alerts.yaml"
DASHBOARD = ROOT / "deploy" / "observability" / "grafana-dashboard.json"
PREFIXES = ("http_", "calls_", "gateway_", "signaling_", "media_token_", "grpc_", "notifier_webhook_")
SUFFIXES = ("_bucket", "_sum", "_count")


def emitted_metrics():
    names = set()
    macro = re.compile(r'(?:counter|gauge|histogram)!\(\s*"([a-z_]+)"', re.S)
    const = re.compile(r'pub const [A-Z_]+_METRIC: &str = "([a-z_]+)"')
    for path in (ROOT / "services").glob("*/src/**/*.rs"):
        text = path.read_text()
        names.update(macro.findall(text))
        names.update(const.findall(text))
    return {n for n in names if n.startswith(PREFIXES)}


def referenced(expr):
    for token in re.findall(r"[a-z_][a-z0-9_]*", expr):
        if token.startswith(PREFIXES) and "_" in token:
            for suffix in SUFFIXES:
                if token.endswith(suffix):
                    token = token[: -len(suffix)]
                    break
            yield token


def anchors(markdown):
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


def main():
    passed, failed = 0, 0

    def check(ok, message):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print(f"FAIL: {message}")

    emitted = emitted_metrics()
    check(len(emitted) > 20, f"found only {len(emitted)} metric names in the services")
    ops = OPS.read_text() if OPS.exists() else ""
    check(bool(ops), "docs/operations.md is missing")
    for name in sorted(emitted):
        check(f"`{name}`" in ops, f"metric {name} is emitted but not described in docs/operations.md")

    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    check(len(rules) >= 5, "alerts.yaml has fewer than five alerts")
    sections = anchors(ops)
    for rule in rules:
        name = rule.get("alert", "<unnamed>")
        for metric in referenced(rule.get("expr", "")):
            check(metric in emitted, f"alert {name} uses {metric}, which no service emits")
        check(rule.get("labels", {}).get("severity") in ("page", "warn"), f"alert {name} has no severity page|warn")
        notes = rule.get("annotations", {})
        check(bool(notes.get("summary")), f"alert {name} has no summary")
        link = notes.get("runbook_url", "")
        check(link.startswith("docs/operations.md#"), f"alert {name} does not link a runbook in docs/operations.md")
        anchor = link.partition("#")[2]
        check(anchor in sections, f"alert {name} links #{anchor}, which is not a section of docs/operations.md")

    dashboard = json.loads(DASHBOARD.read_text())
    graphs = [p for p in dashboard["panels"] if p.get("type") != "row"]
    check(len(graphs) >= 10, "the dashboard has fewer than ten panels")
    for panel in graphs:
        targets = panel.get("targets", [])
        check(bool(targets), f"panel {panel.get('title')} has no query")
        for target in targets:
            for metric in referenced(target.get("expr", "")):
                check(metric in emitted, f"panel {panel.get('title')} uses {metric}, which no service emits")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
