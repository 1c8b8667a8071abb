#!/usr/bin/env python3
"""Writes docs/configuration.md from each binary's --help, so the reference can never drift from
the code; `--check` fails when the committed file is stale (run by `make test`).

Usage: scripts/config-docs.py [--check] [BIN_DIR]
"""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = [
    ("calls-api", ["calls-api"], "REST API, state machine, persistence, timers, outbox relay."),
    ("signaling", ["signaling"], "Socket.IO `/calls` nodes."),
    ("gateway", ["gateway"], "The public edge."),
    ("media-token", ["media-token", "serve"], "Agora token signing over gRPC."),
    ("notifier", ["notifier"], "Device registry and pushes (APNs VoIP, FCM) from the call events; webhooks to the host application (docs/webhooks.md)."),
]


def options(help_text):
    """Yields (env, description, default) for every option that reads an environment variable."""
    blocks = re.split(r"\n(?=\s{2,}-{1,2}[a-zA-Z])", help_text)
    for block in blocks:
        env = re.search(r"\[env: ([A-Z0-9_]+)", block)
        if not env:
            continue
        default = re.search(r"\[default: ([^\]]*)\]", block)
        lines = [l.strip() for l in block.splitlines()[1:]]
        desc = []
        for line in lines:
            if line.startswith("Possible values"):
                break
            if line.startswith("[") or not line:
                if desc:
                    break
                continue
            desc.append(line)
        possible = re.findall(r"^\s*- (\w+):", block, re.M)
        text = " ".join(desc)
        text = re.sub(r"\s*\[(env|default|possible values|aliases): [^\]]*\]", "", text).strip()
        if not text and possible:
            text = "One of"
        text = text.replace("|", "\\|")
        if possible:
            text += " (" + ", ".join(f"`{p}`" for p in possible) + ")"
        yield env.group(1), text, default.group(1) if default else ""


def render(bin_dir):
    out = [
        "# Configuration reference",
        "",
        "Every service reads its configuration from environment variables (each also has a command-line",
        "flag, see `--help`). Unset required values stop the service at start-up with a message naming the",
        "variable. This file is generated from the binaries' `--help` by `scripts/config-docs.py`; `make test`",
        "fails when it is stale.",
        "",
        "The standalone binary (`make run`) runs all five services in one process and reads the same",
        "variables; it supplies the wiring itself (listen addresses of the internal services, upstream URLs,",
        "the media-token credential) and defaults `DATABASE_URL` to `sqlite://data/calls.db`. The internal",
        "services listen on loopback ports of its choosing, except that `CALLS_API_LISTEN` and `NOTIFIER_LISTEN`,",
        "when set, expose calls-api's and notifier's internal APIs (room members, webhook endpoints) there.",
        "",
    ]
    for name, argv, summary in SERVICES:
        exe = Path(bin_dir) / argv[0]
        text = subprocess.run([str(exe), *argv[1:], "--help"], capture_output=True, text=True, check=True).stdout
        out += [f"## {name}", "", summary, "", "| variable | default | meaning |", "|---|---|---|"]
        for env, desc, default in options(text):
            out.append(f"| `{env}` | {('`' + default + '`') if default else '—'} | {desc} |")
        out.append("")
    out += [
        "## Everywhere",
        "",
        "| variable | default | meaning |",
        "|---|---|---|",
        "| `RUST_LOG` | `info` | Log filter (`tracing` syntax, e.g. `info,calls_api=debug`). Logs are JSON lines on stdout. |",
        "| `OTEL_EXPORTER_OTLP_ENDPOINT` | — | Export traces to this OTLP collector (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` takes precedence); unset: no export. |",
        "| `OTEL_EXPORTER_OTLP_PROTOCOL` | `http/protobuf` | `http/protobuf` (port 4318), `http/json` or `grpc` (port 4317); `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` takes precedence. |",
        "| `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_COMPRESSION` | — | As the OTLP exporter specification says. |",
        "| `OTEL_SERVICE_NAME` | the binary's name | The `service.name` of the spans (`calls-backend` for the standalone binary). |",
        "| `OTEL_RESOURCE_ATTRIBUTES` | — | Extra resource attributes; `service.instance.id` defaults to a fresh UUID per process. |",
        "| `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | `parentbased_always_on` | Sampling. |",
        "| `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_EXPORT_TIMEOUT` | SDK defaults | Span batching. |",
        "| `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` | — | `true` / `none`: no export even with an endpoint. |",
        "",
    ]
    return "\n".join(out)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check = "--check" in sys.argv
    bin_dir = args[0] if args else str(ROOT / "target" / "debug")
    text = render(bin_dir)
    target = ROOT / "docs" / "configuration.md"
    if check:
        if not target.exists() or target.read_text() != text:
            sys.exit("docs/configuration.md is stale: run `python3 scripts/config-docs.py` and commit it")
        return
    target.write_text(text)
    print(f"wrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
