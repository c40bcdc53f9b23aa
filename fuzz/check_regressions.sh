#!/bin/sh
# Replays fuzz/seeds/ and fuzz/regressions/ through the built fuzz targets.
#  * normal mode: every input must pass (no panic, no sanitizer report);
#  * strict mode (CARAT_FUZZ_STRICT=1): the `strict_*` inputs are the open
#    findings in README.md; they are expected to FAIL until the library is
#    fixed, and this script says which ones still do.
# Build first: RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS=1 cargo fuzz build
# or, on stable (no coverage instrumentation, enough to replay):
#   cargo build --manifest-path fuzz/Cargo.toml --bins
#   FUZZ_BIN_DIR=target/debug fuzz/check_regressions.sh   (what CI runs)
set -u
cd "$(dirname "$0")"
B=${FUZZ_BIN_DIR:-target/x86_64-unknown-linux-gnu/release}
for t in seeds/*; do
    [ -x "$B/$(basename "$t")" ] || { echo "FAIL: no built fuzz target $B/$(basename "$t")"; exit 1; }
done
status=0
for dir in seeds/* regressions/*; do
    [ -d "$dir" ] || continue
    t=$(basename "$dir")
    for f in "$dir"/*; do
        if ! "$B/$t" "$f" >/dev/null 2>&1; then
            echo "FAIL (normal) $t $f"; status=1
        fi
    done
done
for f in regressions/*/strict_*; do
    [ -f "$f" ] || continue
    t=$(basename "$(dirname "$f")")
    if CARAT_FUZZ_STRICT=1 "$B/$t" "$f" >/dev/null 2>&1; then
        echo "fixed (strict passes) $t $f"
    else
        echo "still open (strict fails) $t $f"
    fi
done
[ $status -eq 0 ] && echo "normal mode: all seeds and regressions pass"
exit $status
