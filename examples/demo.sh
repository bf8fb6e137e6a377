#!/usr/bin/env bash
# A tour of the sandbox with the xcs CLI (run by `just demo`, after the
# operators are built into target/operators/).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
xcs="target/debug/xcs"
ops="target/operators"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() {
    local shown="" arg
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./=-]+$ ]]; then shown+=" $arg"; else shown+=" '$arg'"; fi
    done
    printf '$ xcs%s\n' "$shown"
    "$xcs" "$@"
    local code=$?
    [ "$code" -ne 0 ] && printf '(exit code %d)\n' "$code"
    return 0
}

step "1. An operator is a WebAssembly component. 'inspect' reads its metadata and typed signature from the component itself:"
show inspect "$ops/word-count.wasm"

step "2. Call it with JSON input; the result is JSON on stdout:"
show call "$ops/word-count.wasm" --input '{"text": "the quick brown fox jumps"}'
show call "$ops/stats.wasm" --input '{"xs": [2.5, 4, 9.5]}'

step "3. Input is checked against the signature before any guest code runs (exit code 4):"
show call "$ops/sum.wasm" --input '{"xs": [1, 2, "three"]}'

step "4. 'spin' loops forever. The 200 ms wall-clock deadline interrupts it (exit code 6):"
show call "$ops/spin.wasm" --input '[]' --timeout 200ms

step "5. Or give it an instruction budget (fuel) instead (exit code 7):"
show call "$ops/spin.wasm" --input '[]' --fuel 10000000

step "6. 'hog' allocates until refused; the 16 MiB memory cap stops it (exit code 8):"
show call "$ops/hog.wasm" --input '[]' --memory 16MiB

step "7. 'panic' panics; the host reports a trap with the guest's message and stays up (exit code 9):"
show call "$ops/panic.wasm" --input '[]'

step "8. Every call gets a fresh sandbox: 'counter' increments a global, and always returns 1:"
show call "$ops/counter.wasm" --input '[]'
show call "$ops/counter.wasm" --input '[]'

step "9. Randomness and clocks are virtual and seeded: the same seed gives the same 'entropy' output..."
show call "$ops/entropy.wasm" --input '[]'
show call "$ops/entropy.wasm" --input '[]'
step "   ...and another seed, other bytes:"
show call "$ops/entropy.wasm" --input '[]' --seed 7

step "10. An operator that imports something the host does not grant does not load (exit code 3):"
show call "$ops/wait.wasm" --input '{"ms": 10}'

step "11. Graphs: documents -> word-count on each (a map node, in parallel) -> stats; beside it, a branch that fails."
step "    'check' type-checks every edge before anything runs:"
show check examples/pipeline.toml
step "    'run' runs it as dataflow; --keep-going runs everything that does not depend on the failure:"
mkdir -p target/demo
show run examples/pipeline.toml --input-file examples/documents.json --keep-going \
    --dot target/demo/pipeline.dot --timeline target/demo/timeline.json
printf '\nThe graph, coloured by outcome (Graphviz DOT): target/demo/pipeline.dot'
if command -v dot >/dev/null 2>&1; then
    dot -Tsvg target/demo/pipeline.dot -o target/demo/pipeline.svg && printf ' (rendered: target/demo/pipeline.svg)'
fi
printf '\nThe timeline, one track per concurrency slot: target/demo/timeline.json (open in https://ui.perfetto.dev)\n'

step "12. Composites call operators by name. 'trace' records the calls without running any: the graph, side-effect free:"
show trace "$ops/pipeline.wasm" --input '{"documents": ["the quick brown fox", "wasm"]}'
step "    A composite that needs a value to decide (here: a word count) can only be traced up to there; the trace says where:"
show trace "$ops/refine.wasm" --input '{"text": "one two three", "threshold": 2}'
step "    'run' runs it staged: the forced value is computed, handed back, and the composite goes on:"
show run "$ops/refine.wasm" --input '{"text": "one two three", "threshold": 2}'
printf '\nThe operators are in %s/; try `%s --help`.\n' "$ops" "$xcs"
