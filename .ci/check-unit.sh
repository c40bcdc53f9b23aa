#!/usr/bin/env bash
# Hardening gate for the systemd unit: `systemd-analyze security --offline=yes`
# must rate deploy/carat-catalogd.service at an overall exposure of 1.5 or
# lower (lower is better).
#
# Usage: .ci/check-unit.sh [UNIT_FILE]
#   UNIT_FILE defaults to deploy/carat-catalogd.service (in the repository);
#   a path given here is taken relative to the caller's directory. Its name
#   must end in .service.
# Exit: 0 = score within the limit,
#       1 = score above the limit, the unit could not be analysed, or
#           systemd-analyze is missing or too old (a gate that cannot run
#           must not pass).
set -euo pipefail

readonly MAX_EXPOSURE="1.5"

# Resolve an explicit unit path before moving to the repository root.
unit_arg=""
if [[ $# -ge 1 ]]; then
  unit_arg="$(realpath -- "$1")"
fi
cd "$(dirname "$0")/.."
unit="${unit_arg:-deploy/carat-catalogd.service}"

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-unit: FAIL: systemd-analyze is not installed (apt-get install systemd)" >&2
  exit 1
fi
# --offline needs systemd >= 250.
if ! systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  echo "check-unit: FAIL: systemd-analyze is too old (no 'security --offline'; needs systemd >= 250)" >&2
  exit 1
fi
if [[ ! -f "$unit" ]]; then
  echo "check-unit: FAIL: $unit: no such file" >&2
  exit 1
fi

echo "check-unit: systemd-analyze security --offline=yes $unit"
status=0
output="$(SYSTEMD_COLORS=0 systemd-analyze security --offline=yes --no-pager "$unit" 2>&1)" || status=$?
printf '%s\n' "$output"
if [[ $status -ne 0 ]]; then
  echo "check-unit: FAIL: systemd-analyze security exited with status $status" >&2
  exit 1
fi

# The last line reads e.g.
#   → Overall exposure level for carat-catalogd.service: 1.4 OK 🙂
score="$(printf '%s\n' "$output" | awk '
  /Overall exposure level for/ { sub(/^.*: /, ""); print $1; exit }')"
if [[ ! "$score" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
  echo "check-unit: FAIL: no overall exposure score found in the output above" >&2
  exit 1
fi

if awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s + 0 > max + 0) }'; then
  echo "check-unit: FAIL: $unit: overall exposure $score is above the limit $MAX_EXPOSURE" >&2
  echo "check-unit: restore the hardening settings marked ✗ above, or justify a new limit" >&2
  exit 1
fi
echo "check-unit: OK: $unit: overall exposure $score (limit $MAX_EXPOSURE)"
