#!/usr/bin/env bash
# Offline checks of the delivery and infrastructure code. Called by `make lint`.
#
#   - check-jsonschema: .circleci/config.yml and cloudbuild.yaml against the schemas vendored
#     in check-jsonschema (no download)
#   - terraform fmt -check, where terraform is installed (`terraform validate` needs the
#     provider registry and runs in cloudbuild.yaml instead)
#   - terraform/ against the google provider's schema, read offline from the pinned provider
#     bindings (tests/infra/provider_schema.py): every resource, argument and block must exist
#   - checkov on terraform/ and .circleci/: zero failed checks; every skip carries its reason
#     inline (#checkov:skip=ID:reason)
#   - shellcheck on the shell scripts the infrastructure ships
#
# One line per check on success; the full output of a check that fails, and a non-zero exit.
# The consistency tests between code and Terraform are pytest tests (tests/infra/).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# checkov pins many dependencies of its own, so it lives in its own virtual environment,
# created on first use and recreated when this pin changes.
CHECKOV_VERSION="3.3.30"
CHECKOV_VENV="${CHECKOV_VENV:-.venv-checkov}"

failures=0

run_check() {
  # $1: label; the rest: the command. Quiet on success, everything on failure.
  local label="$1" output started elapsed
  shift
  started=$SECONDS
  if output="$("$@" 2>&1)"; then
    elapsed=$((SECONDS - started))
    printf 'ok    %-44s %3ss\n' "$label" "$elapsed"
  else
    printf 'FAIL  %s\n%s\n' "$label" "$output"
    failures=$((failures + 1))
  fi
}

ensure_checkov() {
  local stamp="${CHECKOV_VENV}/.checkov-${CHECKOV_VERSION}"
  if [ -f "$stamp" ] && [ -x "${CHECKOV_VENV}/bin/checkov" ]; then
    return 0
  fi
  rm -rf "$CHECKOV_VENV"
  "$PYTHON" -m venv "$CHECKOV_VENV"
  "${CHECKOV_VENV}/bin/pip" install --quiet --disable-pip-version-check "checkov==${CHECKOV_VERSION}"
  touch "$stamp"
}

checkov_scan() {
  # --skip-download: no call home for policy metadata (the checks themselves are bundled).
  # A directory checkov could not parse "passes" with no checks at all; count that as a failure.
  local output
  output="$("${CHECKOV_VENV}/bin/checkov" --quiet --compact --skip-download --output cli "$@")" || {
    printf '%s\n' "$output"
    return 1
  }
  if ! grep -Eq 'Passed checks: [1-9][0-9]*, Failed checks: 0,' <<<"$output"; then
    printf '%s\nno checks ran, or some failed\n' "$output"
    return 1
  fi
}

run_check "check-jsonschema .circleci/config.yml" \
  "${VENV}/bin/check-jsonschema" --builtin-schema vendor.circle-ci .circleci/config.yml
run_check "check-jsonschema cloudbuild.yaml" \
  "${VENV}/bin/check-jsonschema" --builtin-schema vendor.cloudbuild cloudbuild.yaml

if command -v terraform >/dev/null 2>&1; then
  # fmt reads no CLI configuration; a setting naming a missing file would only add a warning.
  if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -f "${TF_CLI_CONFIG_FILE}" ]; then
    unset TF_CLI_CONFIG_FILE
  fi
  run_check "terraform fmt -check" terraform fmt -check -recursive terraform
else
  echo "skip  terraform fmt -check (terraform is not installed)"
fi

run_check "terraform/ vs the google provider schema" \
  "${VENV}/bin/python" -m tests.infra.provider_schema terraform

started=$SECONDS
install_log="$(mktemp)"
trap 'rm -f "$install_log"' EXIT
if ensure_checkov >"$install_log" 2>&1; then
  if [ $((SECONDS - started)) -gt 1 ]; then
    printf 'ok    %-44s %3ss\n' "install checkov ${CHECKOV_VERSION} into ${CHECKOV_VENV}" "$((SECONDS - started))"
  fi
  run_check "checkov terraform/" checkov_scan --directory terraform --framework terraform
  run_check "checkov .circleci/" checkov_scan --directory .circleci --framework circleci_pipelines
else
  printf 'FAIL  install checkov %s\n' "$CHECKOV_VERSION"
  cat "$install_log"
  failures=$((failures + 1))
fi

run_check "shellcheck" "${VENV}/bin/shellcheck" \
  terraform/modules/environment/startup.sh \
  terraform/scripts/apply-delivery-policy.sh \
  scripts/check-infra.sh

if [ "$failures" -gt 0 ]; then
  echo "check-infra: ${failures} check(s) failed" >&2
  exit 1
fi
