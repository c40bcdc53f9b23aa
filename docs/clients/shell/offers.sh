#!/bin/sh
# The offers of one dealer in one DDD, from carat-catalogd, with curl and jq.
# usage: sh offers.sh SOCKET DEALER DDD [--once]
# Prints the offers in R$, then (without --once) again at each change, with a
# long-poll. Exit: 1 error, 2 no such dealer or DDD, 3 not synced yet (--once).
set -u
if [ $# -eq 4 ] && [ "$4" = --once ]; then once=1; elif [ $# -eq 3 ]; then once=; else
  echo "usage: sh offers.sh SOCKET DEALER DDD [--once]" >&2; exit 1
fi
sock=$1 url="http://localhost/v1/catalogs/normal/dealers/$2/ddds/$3"
tmp=$(mktemp) && trap 'rm -f "$tmp"' EXIT && trap 'exit 130' INT TERM

# Amounts are integer centavos: 123456 -> "R$ 1.234,56".
show='def group: if length > 3 then (.[:-3] | group) + "." + .[-3:] else . end;
def brl: (. % 100) as $c | "R$ \((. - $c) / 100 | tostring | group),\(if $c < 10 then "0" else "" end)\($c)";
"dealer \(.dealer_code), DDD \(.ddd), catalog \(.general_hash)",
(select(.stale) | "warning: stale catalog, last confirmed by Carat at \(.checked_at)"),
(.categories[] | (.amount_ranges[] | "\(.amount_key)  \(.min_amount | brl) – \(.max_amount | brl)"),
                 (.fixed_amounts[] | "\(.amount_key)  \(.amount | brl)"))'

etag=
while :; do
  # With the ETag: wait up to 5 minutes for a change (a 304 if none).
  if out=$(curl -sS --unix-socket "$sock" -o "$tmp" -w '%{http_code} %header{etag}' \
      ${etag:+-H "If-None-Match: $etag"} "$url${etag:+?wait=300}"); then
    status=${out%% *}
  else
    status=000 && echo "error: cannot reach $sock" >&2 # stopped or restarting: try again
  fi
  case $status in
    200) etag=${out#* }; jq -r "$show" "$tmp" || exit 1 ;;
    304) ;; # unchanged
    000) [ -n "$once" ] && exit 1; sleep 5 ;;
    *) # match on the error's code; the message is for people
      jq -r '"error: \(.error.code): \(.error.message)"' "$tmp" >&2
      case $status in 404) exit 2 ;; 503) [ -n "$once" ] && exit 3; sleep 5 ;; *) exit 1 ;; esac ;;
  esac
  [ -n "$once" ] && exit 0
done
