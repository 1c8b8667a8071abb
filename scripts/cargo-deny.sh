#!/usr/bin/env bash
# `cargo deny check` against deny.toml, installing the pinned cargo-deny first if it is missing
# or another version (`cargo install --locked`: the versions its own lock file was tested with).
#
# Usage: scripts/cargo-deny.sh VERSION
#
# licenses, bans (duplicate versions) and sources need nothing but Cargo.lock and the registry.
# advisories needs the RustSec database, which cargo-deny clones from GitHub: where GitHub cannot
# be reached (this project's CI machines reach only package registries) that check is skipped
# with a warning, unless CARGO_DENY_ADVISORIES=require, which makes it fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

version="$1"
installed=$(cargo deny --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$installed" != "$version" ]]; then
  echo "installing cargo-deny $version (was: ${installed:-none})" >&2
  cargo install --locked "cargo-deny@$version"
fi

cargo deny check bans licenses sources

if cargo deny fetch db >/dev/null 2>&1; then
  cargo deny --offline check advisories
elif [[ "${CARGO_DENY_ADVISORIES:-}" == "require" ]]; then
  echo "cargo deny: cannot fetch the RustSec advisory database (github.com)" >&2
  exit 1
else
  echo "WARNING: advisories NOT checked: the RustSec advisory database cannot be fetched" \
    "(github.com unreachable); run 'make deny' where it can be, or set" \
    "CARGO_DENY_ADVISORIES=require to make this an error" >&2
fi
