#!/bin/sh
# Replays fuzz/seeds/ and fuzz/regressions/ through the built fuzz targets,
# and exits 1 when any check below fails, showing that input's output:
#  * every input, normal mode: must pass (no panic, no sanitizer report);
#  * seeds/: must also get past parsing (the target says `reach: parsed`
#    with CARAT_FUZZ_TRACE=1): a seed that a wire-model change no longer
#    parses would pass while checking nothing. A `snapshot_build` seed
#    named <type>... must build a catalog of that type (`reach: built/<type>`);
#  * regressions/*/strict_*: findings fixed in the library (README.md,
#    "Findings"): must pass with CARAT_FUZZ_STRICT=1 too, so a fixed finding
#    cannot come back unnoticed;
#  * regressions/*/open_*: findings not fixed yet: expected to fail with
#    CARAT_FUZZ_STRICT=1; listed, not a failure. Once fixed, rename the
#    input to strict_* (and say so in README.md).
# Build first: RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS=1 cargo fuzz build
# or, on stable (no coverage instrumentation, enough to replay):
#   cargo build --manifest-path fuzz/Cargo.toml --bins
#   FUZZ_BIN_DIR=target/debug fuzz/check_regressions.sh   (what CI runs)
set -u
cd "$(dirname "$0")"
B=${FUZZ_BIN_DIR:-target/x86_64-unknown-linux-gnu/release}
status=0

# fail WHAT TARGET INPUT OUTPUT: says so, with the run's output (the
# panic's message and place; rerun by hand with RUST_BACKTRACE=1 for more).
fail() {
    echo "FAIL ($1) $2 $3"
    printf '%s\n' "$4" |
        grep -v -e '^WARNING: Failed to find function' -e '^INFO: ' -e '^\*\*\*' |
        head -n 60 | sed 's/^/    | /'
    status=1
}
export RUST_BACKTRACE=0

for src in fuzz_targets/*.rs; do
    t=$(basename "$src" .rs)
    [ -x "$B/$t" ] || { echo "FAIL: no built fuzz target $B/$t"; exit 1; }
    ls seeds/"$t"/* >/dev/null 2>&1 || { echo "FAIL: target $t has no seeds (seeds/$t/)"; exit 1; }
done
for dir in regressions/*; do
    [ -d "$dir" ] || continue
    [ -x "$B/$(basename "$dir")" ] || { echo "FAIL: no built fuzz target $B/$(basename "$dir") for $dir"; exit 1; }
done

runs=0
for dir in seeds/* regressions/*; do
    [ -d "$dir" ] || continue
    t=$(basename "$dir")
    for f in "$dir"/*; do
        [ -f "$f" ] || continue
        runs=$((runs + 1))
        if ! out=$(CARAT_FUZZ_TRACE=1 "$B/$t" "$f" 2>&1); then
            fail normal "$t" "$f" "$out"
            continue
        fi
        case "$dir" in
        seeds/*)
            printf '%s\n' "$out" | grep -qx 'reach: parsed' ||
                fail "a seed that does not parse: it checks nothing" "$t" "$f" "$out"
            if [ "$t" = snapshot_build ]; then
                want="reach: built/$(basename "$f" | sed 's/[._].*//')"
                printf '%s\n' "$out" | grep -qx "$want" ||
                    fail "a seed that does not build its type (no '$want')" "$t" "$f" "$out"
            fi
            ;;
        esac
    done
done

for f in regressions/*/strict_* regressions/*/open_*; do
    [ -f "$f" ] || continue
    t=$(basename "$(dirname "$f")")
    runs=$((runs + 1))
    if out=$(CARAT_FUZZ_STRICT=1 "$B/$t" "$f" 2>&1); then
        case "$(basename "$f")" in
        open_*) echo "fixed? (strict passes): $t $f: rename it strict_* and update README.md" ;;
        esac
    else
        case "$(basename "$f")" in
        strict_*) fail "strict: a finding listed as fixed is back" "$t" "$f" "$out" ;;
        *) echo "still open (strict fails) $t $f" ;;
        esac
    fi
done

if [ $status -eq 0 ]; then
    echo "fuzz replay: $runs runs passed (seeds parse, fixed strict findings stay fixed)"
fi
exit $status
