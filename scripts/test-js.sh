#!/usr/bin/env bash
# The JS client suites (tests/js), or with FILTER=<text> only the tests whose names contain it.
#
# Node's runner (20) still runs every file's `before` hooks when a name pattern skips all of a
# file's tests, and those hooks start whole clusters; so with a filter only the files that can
# hold a matching test are run: the ones that contain the text, and the ones that import them
# (acceptance scenarios are written once in scenarios.mjs and run by each topology's file).
set -euo pipefail
cd "$(dirname "$0")/../tests/js"

files=()
args=(--test --test-reporter=spec)
if [[ -n "${FILTER:-}" ]]; then
  mapfile -t sources < <(find . -name '*.mjs' -not -path './node_modules/*' | sort)
  declare -A hit=()
  while IFS= read -r f; do hit[$f]=1; done < <(grep -lF -- "$FILTER" "${sources[@]}" || true)
  # Follow imports upwards until nothing new is added.
  changed=1
  while ((changed)); do
    changed=0
    for f in "${sources[@]}"; do
      [[ -n "${hit[$f]:-}" ]] && continue
      for h in "${!hit[@]}"; do
        if grep -qF -- "/$(basename "$h")'" "$f"; then
          hit[$f]=1
          changed=1
          break
        fi
      done
    done
  done
  for f in "${sources[@]}"; do
    [[ -n "${hit[$f]:-}" && "$f" == *.test.mjs ]] && files+=("$f")
  done
  if ((${#files[@]} == 0)); then
    echo "FILTER=$FILTER: no JS test file mentions it" >&2
    exit 1
  fi
  # --test-name-pattern is a regular expression; the filter is plain text.
  pattern=$(printf '%s' "$FILTER" | sed 's/[][\\.^$*+?(){}|/]/\\&/g')
  args+=("--test-name-pattern=$pattern")
  echo "running ${files[*]} (tests named like: $FILTER)" >&2
fi

exec node "${args[@]}" "${files[@]}"
