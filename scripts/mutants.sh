#!/usr/bin/env bash
# Mutation testing of the pure core with cargo-mutants: the domain types and
# whole-catalog checks (src/catalog.rs), the tolerant reader
# (src/carat/reader.rs) and the hash gate (src/sync/gate.rs). Each mutant is
# built and judged by the library's unit tests and the fast integration
# tests that read Carat's answers (seed_fixtures, carat_shapes). Takes about
# an hour on 2 cores; not part of CI. Results in mutants.out/ (outcomes.json,
# missed.txt); docs/testing.md keeps the counts.
#   scripts/mutants.sh                  # the three files
#   scripts/mutants.sh -f src/catalog.rs   # only the files given
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
files=(-f src/catalog.rs -f src/carat/reader.rs -f src/sync/gate.rs)
[ $# -gt 0 ] && files=("$@")
exec cargo mutants "${files[@]}" -- --lib --test seed_fixtures --test carat_shapes
