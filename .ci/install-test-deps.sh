#!/usr/bin/env bash
# Installs, from Debian packages, the tools the test suite runs besides the
# Rust toolchain: the client examples' languages (tests/clients.rs runs
# docs/clients/ with them) and promtool (tests/prometheus.rs checks the
# alert rules). Idempotent: installs only what is missing, runs
# `apt-get update` at most once, uses sudo only when not root.
set -euo pipefail

# command the tests run -> the Debian package that provides it
deps=(
  "python3:python3"
  "node:nodejs"
  "go:golang-go"
  "java:default-jdk-headless"
  "javac:default-jdk-headless"
  "jq:jq"
  "curl:curl"
  "socat:socat"
  "promtool:prometheus"
)

missing=()
for d in "${deps[@]}"; do
  cmd=${d%%:*} pkg=${d#*:}
  if ! command -v "$cmd" >/dev/null 2>&1; then
    case " ${missing[*]-} " in *" $pkg "*) ;; *) missing+=("$pkg") ;; esac
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "test dependencies: all present"
  exit 0
fi

as_root=""
[ "$(id -u)" -eq 0 ] || as_root="sudo"
echo "test dependencies: installing ${missing[*]}"
$as_root apt-get update -qq
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"

for d in "${deps[@]}"; do
  cmd=${d%%:*}
  command -v "$cmd" >/dev/null 2>&1 || { echo "still missing after install: $cmd (${d#*:})" >&2; exit 1; }
done
echo "test dependencies: ready"
