#!/usr/bin/env bash
# Instance startup script of every release group (the base template's `startup-script`).
#
# Reads `release-artifact` (gs://... or file://...), `release-artifact-sha256` and
# `release-version` from the instance metadata, checks the downloaded file's SHA-256 against
# the release's before anything is unpacked (a mismatch, or no digest, and the release never
# starts: "artifact digest mismatch"), unpacks the artifact (CONTRACT §7: a tar.gz with a
# Procfile at its root), runs the
# Procfile's `web:` command under systemd with PORT and RELEASE_VERSION, and puts nginx in
# front on port 80. Run again with a different release in the metadata, it switches to it
# and restarts both; run again with the same release, it changes nothing but makes sure
# both are running.
#
# Compute Engine does not report a failed startup script, so every refusal (`die`: missing or
# malformed metadata, an artifact that does not exist, a digest mismatch, an artifact without a
# Procfile) is also written to the guest attribute release/error (needs
# `enable-guest-attributes=TRUE` in the metadata), which the pipeline reads through
# instances.getGuestAttributes to fail the deployment at once. A release that starts deletes it.
# Other failures (a download that keeps failing with a server error) only exit: autohealing
# recreates the VM and the startup runs again.
#
# Modes: `boot` (the default, what the metadata script runner calls) applies the release and
# installs `release-watch`, a service running a copy of this script in `watch` mode, which
# long-polls the metadata and runs `apply` when release-version changes.
#
# Three variables exist for tests and images, not for production:
#   RELEASE_METADATA_URL  metadata server base (default: the real one)
#   RELEASE_STORAGE_URL   Cloud Storage JSON API base (default: the real one)
#   RELEASE_ROOT          prefix for every path written (default: the real root)
set -euo pipefail

METADATA_URL="${RELEASE_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}"
STORAGE_URL="${RELEASE_STORAGE_URL:-https://storage.googleapis.com}"
ROOT="${RELEASE_ROOT:-}"

# Paths as the instance sees them (unit files name these) and as this script writes them.
APP_HOME=/opt/release
ENV_FILE=/etc/release/app.env
UNIT=release-app
UNIT_FILE="/etc/systemd/system/${UNIT}.service"
NGINX_SITE=/etc/nginx/conf.d/release.conf
WATCH_UNIT=release-watch
WATCH_UNIT_FILE="/etc/systemd/system/${WATCH_UNIT}.service"
APP_USER=release

log() {
  # Serial console and journal both pick up stderr; one greppable prefix.
  echo "release-startup: $*" >&2
}

GUEST_ERROR_URL="${METADATA_URL}/instance/guest-attributes/release/error"

die() {
  log "error: $*"
  report_error "$*"
  exit 1
}

report_error() {
  # Best effort: without guest attributes the failure still shows in the log, and the
  # deployment fails at its deadline instead of at once.
  curl --silent --show-error --fail --retry 3 --retry-connrefused --max-time 10 -X PUT \
    -H 'Metadata-Flavor: Google' --data-binary "$1" "$GUEST_ERROR_URL" >/dev/null ||
    log "could not write the guest attribute release/error"
}

clear_error() {
  # A release that started leaves no error from an earlier refusal behind (404: there was none).
  curl --silent --max-time 10 -X DELETE -H 'Metadata-Flavor: Google' "$GUEST_ERROR_URL" >/dev/null || true
}

metadata() {
  # $1: path under instance/attributes; $2: default when the attribute is absent ("" = required).
  local name="$1" default="${2-}" value
  if value="$(curl --silent --show-error --fail --retry 5 --retry-connrefused --retry-delay 1 \
    --max-time 10 -H 'Metadata-Flavor: Google' "${METADATA_URL}/instance/attributes/${name}")"; then
    printf '%s' "$value"
  elif [ -n "$default" ]; then
    printf '%s' "$default"
  else
    die "instance metadata ${name} is missing"
  fi
}

access_token() {
  curl --silent --show-error --fail --retry 5 --retry-connrefused --max-time 10 \
    -H 'Metadata-Flavor: Google' \
    "${METADATA_URL}/instance/service-accounts/default/token" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

urlencode() {
  python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"
}

fetch_artifact() {
  # $1: artifact URI; $2: destination file.
  local uri="$1" out="$2"
  case "$uri" in
    gs://*)
      # The JSON API with the instance's own token: no SDK needed on the image.
      local rest="${uri#gs://}"
      local bucket="${rest%%/*}" object="${rest#*/}"
      [ -n "$bucket" ] && [ "$object" != "$rest" ] || die "malformed artifact URI ${uri}"
      local token status
      token="$(access_token)"
      # No --fail: the status decides. A missing or unreadable object will not appear by itself
      # (refused at once); anything else (5xx and 429 after curl's retries, no connection)
      # only exits, and autohealing tries again on a new VM.
      status="$(curl --silent --show-error --retry 5 --retry-connrefused --max-time 300 \
        -H "Authorization: Bearer ${token}" -o "$out" -w '%{http_code}' \
        "${STORAGE_URL}/storage/v1/b/${bucket}/o/$(urlencode "$object")?alt=media")" || status=000
      case "$status" in
        200) ;;
        403 | 404) die "cannot fetch artifact ${uri}: HTTP ${status} (missing, or not readable by the instance)" ;;
        *)
          log "downloading ${uri} failed (HTTP ${status}); a new VM will try again"
          exit 1
          ;;
      esac
      ;;
    file://*)
      local path="${uri#file://}"
      [ -f "$path" ] || die "artifact ${uri} does not exist"
      cp -- "$path" "$out"
      ;;
    *)
      die "unsupported artifact URI ${uri} (expected gs:// or file://)"
      ;;
  esac
}

web_command() {
  # The `web:` line of the Procfile (first match), without the `web:` prefix.
  sed -n -E 's/^[[:space:]]*web:[[:space:]]*(.+[^[:space:]])[[:space:]]*$/\1/p' "$1" | head -n 1
}

ensure_packages() {
  # Images may come with these; a bare Debian image gets them once, at first boot.
  if ! command -v nginx >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
    log "installing nginx and python3"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx python3 >/dev/null
  fi
  if ! id -u "$APP_USER" >/dev/null 2>&1; then
    useradd --system --home-dir "$APP_HOME" --shell /usr/sbin/nologin "$APP_USER"
  fi
}

verify_artifact() {
  # $1: downloaded file; $2: expected SHA-256; $3: artifact URI (for the message). Runs before
  # tar ever reads the file: bytes that are not the release's are never unpacked or run.
  local file="$1" expected="$2" uri="$3" actual
  actual="$(sha256sum -- "$file" | cut -d ' ' -f 1)"
  if [ "$actual" != "$expected" ]; then
    rm -f -- "$file"
    die "artifact digest mismatch: ${uri} has sha256 ${actual}, the release expects ${expected}; not starting it"
  fi
  log "artifact ${uri} verified (sha256 ${actual})"
}

install_release() {
  # $1: version; $2: artifact URI; $3: its expected SHA-256. Unpacks into releases/<version>
  # once (`.complete` holds the digest it was verified against); a retry after a failed unpack
  # starts over from an empty directory.
  local version="$1" uri="$2" sha256="$3"
  local releases="${ROOT}${APP_HOME}/releases"
  local target="${releases}/${version}"
  if [ -f "${target}/.complete" ] && [ "$(cat "${target}/.complete")" = "$sha256" ]; then
    log "release ${version} already unpacked and verified"
    return
  fi
  mkdir -p "$releases"
  local work
  work="$(mktemp -d "${releases}/.incoming.XXXXXX")"
  fetch_artifact "$uri" "${work}/artifact.tar.gz"
  verify_artifact "${work}/artifact.tar.gz" "$sha256" "$uri"
  mkdir "${work}/tree"
  # --no-same-owner / --no-same-permissions: files belong to root and are read-only to the
  # app user, whatever the archive says.
  tar --extract --gzip --file "${work}/artifact.tar.gz" --directory "${work}/tree" \
    --no-same-owner --no-same-permissions
  [ -f "${work}/tree/Procfile" ] || die "artifact ${uri} has no Procfile at its root"
  [ -n "$(web_command "${work}/tree/Procfile")" ] || die "artifact ${uri}: Procfile has no web: line"
  printf '%s' "$sha256" >"${work}/tree/.complete"
  rm -rf "$target"
  mv "${work}/tree" "$target"
  rm -rf "$work"
}

write_if_changed() {
  # $1: file; stdin: content. Exit status 0 if the file changed.
  local file="$1" tmp
  mkdir -p "$(dirname "$file")"
  tmp="$(mktemp "${file}.XXXXXX")"
  cat >"$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  chmod 0644 "$tmp"
  mv "$tmp" "$file"
}

configure() {
  # $1: version; $2: port. Points `current` at the release and writes the unit, the
  # environment file, the launcher and the nginx site.
  local version="$1" port="$2" web
  web="$(web_command "${ROOT}${APP_HOME}/releases/${version}/Procfile")"
  ln -sfn "releases/${version}" "${ROOT}${APP_HOME}/current"

  # Heroku semantics: the web command is a shell command line run from the app's root.
  write_if_changed "${ROOT}${APP_HOME}/web.sh" <<EOF || true
#!/bin/bash
# Generated by the release startup script: runs the Procfile web: command of the current release.
cd "\$(dirname "\$0")/current" || exit 1
exec ${web}
EOF
  chmod 0755 "${ROOT}${APP_HOME}/web.sh"

  write_if_changed "${ROOT}${ENV_FILE}" <<EOF || true
PORT=${port}
RELEASE_VERSION=${version}
EOF

  write_if_changed "${ROOT}${UNIT_FILE}" <<EOF || true
[Unit]
Description=Release pipeline app (Procfile web:)
After=network-online.target
Wants=network-online.target

[Service]
User=${APP_USER}
EnvironmentFile=${ENV_FILE}
ExecStart=${APP_HOME}/web.sh
Restart=always
RestartSec=2
# The load balancer drains a group before it goes away; give open requests time to finish.
TimeoutStopSec=30
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
EOF

  write_if_changed "${ROOT}${NGINX_SITE}" <<EOF || true
# Generated by the release startup script.
server {
    listen 80 default_server;
    listen [::]:80 default_server;

    location / {
        proxy_pass http://127.0.0.1:${port};
        proxy_http_version 1.1;
        proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$http_x_forwarded_proto;
        proxy_read_timeout 30s;
    }
}
EOF
  # The distribution's default site would also claim default_server on port 80.
  rm -f "${ROOT}/etc/nginx/sites-enabled/default"
}

current_version() {
  if [ -f "${ROOT}${ENV_FILE}" ]; then
    sed -n 's/^RELEASE_VERSION=//p' "${ROOT}${ENV_FILE}"
  fi
}

apply_release() {
  local version uri sha256 port previous
  version="$(metadata release-version)"
  uri="$(metadata release-artifact)"
  sha256="$(metadata release-artifact-sha256)"
  port="$(metadata release-port 8080)"
  [[ "$version" =~ ^[0-9A-Za-z.+-]+$ ]] || die "release-version ${version} is not a version"
  [[ "$sha256" =~ ^[0-9a-f]{64}$ ]] || die "release-artifact-sha256 ${sha256} is not a SHA-256 (64 lowercase hex)"
  [[ "$port" =~ ^[0-9]+$ ]] || die "release-port ${port} is not a port"
  previous="$(current_version)"

  ensure_packages
  install_release "$version" "$uri" "$sha256"
  configure "$version" "$port"

  systemctl daemon-reload
  systemctl enable "$UNIT" nginx
  if [ "$previous" != "$version" ]; then
    log "switching ${previous:-nothing} -> ${version}"
    systemctl restart "$UNIT"
    nginx -t
    systemctl restart nginx
  else
    log "release ${version} already configured"
    systemctl start "$UNIT" nginx
  fi
  clear_error
  log "serving ${version}"
}

install_watcher() {
  # The startup script runs at boot only. A copy of it, run as a service in `watch` mode,
  # applies a release whose metadata changes while the instance runs (e.g. a rollback that
  # re-points an existing group), restarting the app and nginx as a boot would.
  local target="${ROOT}${APP_HOME}/bin/release-apply"
  mkdir -p "$(dirname "$target")"
  if [ -f "$0" ] && ! [ "$0" -ef "$target" ]; then
    install -m 0755 "$0" "$target"
  fi
  write_if_changed "${ROOT}${WATCH_UNIT_FILE}" <<EOF || true
[Unit]
Description=Release pipeline: apply a release whose instance metadata changed
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=${APP_HOME}/bin/release-apply watch
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
EOF
  systemctl daemon-reload
  systemctl enable --now "$WATCH_UNIT"
}

watch_release() {
  # Long-polls release-version (wait_for_change with the last ETag). A new value re-runs this
  # script in apply mode, in its own process, so a failed apply leaves the watcher running
  # and the current release serving.
  local etag="NONE" value started
  WATCH_HEADERS="$(mktemp)"
  trap 'rm -f "$WATCH_HEADERS"' EXIT
  while true; do
    started=$SECONDS
    if value="$(curl --silent --fail --max-time 330 -D "$WATCH_HEADERS" -H 'Metadata-Flavor: Google' \
      "${METADATA_URL}/instance/attributes/release-version?wait_for_change=true&timeout_sec=300&last_etag=${etag}")"; then
      etag="$(sed -n 's/^[Ee][Tt][Aa][Gg]:[[:space:]]*\([^[:space:]]*\).*/\1/p' "$WATCH_HEADERS")"
      etag="${etag:-NONE}"
      if [ "$value" != "$(current_version)" ]; then
        log "release-version changed to ${value}"
        bash "$0" apply || log "applying ${value} failed; the current release keeps serving"
      fi
    else
      sleep 5
    fi
    # A metadata server that answers at once (no long poll) must not make this loop spin.
    if [ $((SECONDS - started)) -lt 1 ]; then
      sleep 1
    fi
  done
}

main() {
  case "${1:-boot}" in
    boot)
      apply_release
      install_watcher
      ;;
    apply) apply_release ;;
    watch) watch_release ;;
    *)
      log "usage: $0 [boot|apply|watch]"
      exit 2
      ;;
  esac
}

main "$@"
