#!/usr/bin/env bash
# Installs, from Debian packages, what the build and the test suite run
# besides the Rust toolchain (a test whose tool is missing fails, naming its
# package). Idempotent: installs only what is missing, runs `apt-get update`
# at most once, uses sudo only when not root. `scripts/test` and `.ci/run`
# call it.
set -euo pipefail
# groupadd and friends live in sbin, which a sudo user's PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# command the build or a test runs -> the Debian package that provides it
deps=(
  "cc:build-essential"           # bundled SQLite, aws-lc, libFuzzer
  "c++:build-essential"
  "update-ca-certificates:ca-certificates"  # crates.io over HTTPS
  "faketime:faketime"            # tests/lifecycle.rs moves the daemon's wall clock
  "groupadd:passwd"              # tests/daemon.rs may make a group
  "systemd-analyze:systemd"      # .ci/check-unit.sh
  "systemd-socket-activate:systemd"  # tests/activation.rs
  "setpriv:util-linux"           # tests run the daemon as nobody
  "python3:python3"              # tests/clients.rs runs docs/clients/ ...
  "node:nodejs"                  # ... in each language
  "go:golang-go"
  "java:default-jdk-headless"
  "javac:default-jdk-headless"
  "jq:jq"
  "curl:curl"                    # and tests/demo.rs runs the demo's curl line
  "promtool:prometheus"          # tests/prometheus.rs checks the alert rules
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
