# xcs task runner: `just --list` shows the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Guest components are built in their own target dir so that a build
# script may build them while the outer cargo holds the main one.
guest_target := "target/guest"

# The xcs CLI, built in the dev profile (dependencies are optimised).
xcs := "cargo run --quiet -p xcs --"

default:
    @just --list

# Install what the build needs: the wasm32-wasip2 target (idempotent).
setup:
    @rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

# Build every operator under operators/ into target/operators/<name>.wasm.
build-operators: setup
    cargo build --release --target wasm32-wasip2 --target-dir {{guest_target}} \
        $(for dir in operators/*/; do printf -- '-p %s ' "$(basename "$dir")"; done)
    mkdir -p target/operators
    for dir in operators/*/; do \
        name="$(basename "$dir")"; \
        cp "{{guest_target}}/wasm32-wasip2/release/${name//-/_}.wasm" "target/operators/$name.wasm"; \
    done
    @echo "operators: $(ls target/operators | tr '\n' ' ')"

# Build the operators and show what the sandbox does with them.
demo: build-operators
    cargo build --quiet -p xcs
    bash examples/demo.sh

# Run every test (the operators are built by the test crate's build script).
test: setup
    cargo test

# Benchmarks: medians against a bare-wasmtime baseline measured in the same run.
bench: setup
    cargo bench -p xcs-tests

# Format check and clippy (warnings denied), host and guest crates.
lint: setup
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --release --target wasm32-wasip2 --target-dir {{guest_target}} \
        $(for dir in operators/*/; do printf -- '-p %s ' "$(basename "$dir")"; done) -- -D warnings

# API docs, warnings denied.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

# Exactly what CI runs.
ci: lint test doc

# Seconds each fuzz target runs in `just fuzz` (`just fuzz_seconds=600 fuzz`).
fuzz_seconds := "60"

# Fuzz the codec and loading for `fuzz_seconds` each (nightly, cargo-fuzz; not in ci).
fuzz:
    cargo +nightly fuzz build --fuzz-dir fuzz --target-dir fuzz/target
    for target in codec load; do \
        echo "== fuzz $target: {{fuzz_seconds}} s"; \
        cargo +nightly fuzz run --fuzz-dir fuzz --target-dir fuzz/target "$target" -- \
            -max_total_time={{fuzz_seconds}} -print_final_stats=1 2>&1 \
            | tee "fuzz/target/$target.log" \
            | grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY)|panicked|ERROR'; \
    done

# Calls made by `just soak` (`just soak_calls=200000 soak`).
soak_calls := "1000000"

# Soak: `soak_calls` mixed good and failing calls; fails unless memory stays flat (not in ci).
soak: setup
    cargo run --release -p xcs-tests --bin soak -- --calls {{soak_calls}}
