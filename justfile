# xcs task runner: `just --list` shows the recipes.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Guest components are built in their own target dir so that a build
# script may build them while the outer cargo holds the main one.
guest_target := "target/guest"

# The xcs CLI, built in the dev profile (dependencies are optimised).
xcs := "cargo run --quiet -p xcs-cli --"

default:
    @just --list

# Install what the build needs: the guest targets (idempotent).
setup:
    @for target in wasm32-wasip2 wasm32-unknown-unknown; do \
        rustup target list --installed | grep -qx "$target" || rustup target add "$target"; \
    done

# Build every operator under operators/ into target/operators/<name>.wasm:
# the test crate's build script builds them (wasm32-wasip2, or
# wasm32-unknown-unknown made a component for the lean ones) into
# target/guest/components/.
build-operators: setup
    @# The build script reruns when its inputs change; a removed output
    @# directory is not one of them.
    @[ -d target/guest/components ] || touch tests/build.rs
    cargo build --quiet -p xcs-tests --lib
    mkdir -p target/operators
    cp target/guest/components/*.wasm target/operators/
    @echo "operators: $(ls target/operators | tr '\n' ' ')"

# Build the operators and show what the sandbox does with them.
demo: build-operators
    cargo build --quiet -p xcs-cli
    bash examples/demo.sh

# Where the foreign toolchains are installed (a venv and an npm prefix),
# and the tests' builds with them are cached.
foreign := "target/foreign"

# Install the toolchains the tests build Python, JavaScript and C
# operators with, pinned, into target/foreign (idempotent; needs python3,
# npm, and Debian's apt for clang with wasi-libc).
setup-foreign:
    @{{foreign}}/venv/bin/componentize-py --version 2>/dev/null | grep -x 'componentize-py 0.25.1' >/dev/null || { \
        python3 -m venv {{foreign}}/venv && \
        {{foreign}}/venv/bin/pip install --quiet --disable-pip-version-check componentize-py==0.25.1; }
    @{{foreign}}/node/node_modules/.bin/componentize-js --version 2>/dev/null | grep -x '0.23.0' >/dev/null || \
        npm install --silent --no-audit --no-fund --prefix {{foreign}}/node @bytecodealliance/componentize-js@0.23.0
    @# C: Debian's clang with wasi-libc (as root, or through sudo), and
    @# wit-bindgen and wasm-tools from crates.io into target/foreign/cargo.
    @[ -e /usr/lib/wasm32-wasi/libc.a ] && [ -e /usr/lib/llvm-14/lib/clang/14.0.6/lib/wasi/libclang_rt.builtins-wasm32.a ] && command -v clang >/dev/null || { \
        if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null || \
        { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null; }; }
    @{{foreign}}/cargo/bin/wit-bindgen --version 2>/dev/null | grep -x 'wit-bindgen-cli 0.63.0' >/dev/null || \
        cargo install --quiet --locked --root {{foreign}}/cargo wit-bindgen-cli@0.63.0
    @{{foreign}}/cargo/bin/wasm-tools --version 2>/dev/null | grep -x 'wasm-tools 1.263.0' >/dev/null || \
        cargo install --quiet --locked --root {{foreign}}/cargo wasm-tools@1.263.0

# Install Debian's nats-server (2.9: JetStream and the object store), which
# the tests of `xcs worker` and `xcs run --nats` start on loopback
# (apt, as root or through sudo).
setup-nats:
    @command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || { \
        if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi; \
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server >/dev/null || \
        { $sudo apt-get update -q >/dev/null && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server >/dev/null; }; }

# Run every test (the operators are built by the test crate's build script;
# the Python and JavaScript ones with the toolchains of setup-foreign; the
# NATS ones against setup-nats's server).
test: setup setup-foreign setup-nats
    cargo test

# Benchmarks: medians against a bare-wasmtime baseline measured in the same run.
# The call bench drives the Extism peer (its own workspace and wasmtime, so
# its own process) batch by batch, interleaved with its own variants.
bench: setup setup-foreign setup-nats
    @# The languages bench calls the CLI tests' builds of `xcs new` projects.
    cargo test --quiet -p xcs-cli --test cli languages::a_
    cargo build --release --quiet --manifest-path tests/peer-extism/Cargo.toml --target-dir target/peer-extism
    XCS_PEER_EXTISM="$PWD/target/peer-extism/release/xcs-peer-extism" cargo bench -p xcs-tests
    cargo bench -p xcs-cli --bench serve
    cargo bench -p xcs-cli --bench nats

# Format check and clippy (warnings denied), host and guest crates.
lint: setup
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --release --target wasm32-wasip2 --target-dir {{guest_target}} \
        $(for dir in operators/*/; do printf -- '-p %s ' "$(basename "$dir")"; done) -- -D warnings
    cargo clippy --release --target wasm32-unknown-unknown --target-dir {{guest_target}} \
        -p xcs-guest $(grep -l '^wasi = false' operators/*/Cargo.toml | xargs -r -n1 dirname | xargs -r -n1 basename | sed 's/^/-p /') -- -D warnings

# API docs, warnings denied.
doc:
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps

# Exactly what CI runs.
ci: lint test doc

# `just fuzz` settings, e.g. `just fuzz_seconds=600 fuzz`, or the README's
# long run: `just fuzz_targets=load fuzz_sanitizer=none fuzz_jobs=2
# fuzz_runs=500000 fuzz_seconds=0 fuzz`.
# Targets to run, in order.
fuzz_targets := "codec load"
# Seconds each fuzzing process runs (0: no time limit).
fuzz_seconds := "60"
# Executions each fuzzing process makes (-1: no limit).
fuzz_runs := "-1"
# Fuzzing processes per target (libFuzzer's -jobs and -workers).
fuzz_jobs := "1"
# Sanitizer of the fuzz build: `address`, or `none` for 4–7× the
# executions per second (the build is ~16 min with ASan, 7–9 without).
fuzz_sanitizer := "address"
# More libFuzzer flags, e.g. `-max_len=8192`.
fuzz_args := ""

# Fuzz each of `fuzz_targets` (nightly, cargo-fuzz; not in ci); fails on a crash.
fuzz:
    #!/usr/bin/env bash
    set -euo pipefail
    [ {{fuzz_jobs}} -ge 1 ] || { echo "fuzz_jobs must be at least 1" >&2; exit 1; }
    # Cranelift built without coverage instrumentation: see the wrapper
    # (which runs the user's own RUSTC_WRAPPER from the environment inside it).
    export XCS_FUZZ_INNER_WRAPPER="${RUSTC_WRAPPER:-}"
    export RUSTC_WRAPPER="$PWD/fuzz/rustc-wrapper"
    root="$PWD/fuzz"
    dir="$root/target/{{fuzz_sanitizer}}"
    cargo +nightly fuzz build --fuzz-dir fuzz --target-dir "$dir" -s {{fuzz_sanitizer}}
    for target in {{fuzz_targets}}; do
        echo "== fuzz $target: {{fuzz_jobs}} process(es), {{fuzz_seconds}} s, {{fuzz_runs}} runs each"
        logs="$dir/logs/$target"
        rm -rf "$logs"
        mkdir -p "$logs" "$root/corpus/$target" "$root/artifacts/$target"
        status=0
        # Relative paths: libFuzzer restarts each job through the shell
        # without quoting, so a checkout path with spaces would break.
        (cd "$logs" && "../../x86_64-unknown-linux-gnu/release/$target" "../../../../corpus/$target" \
            -artifact_prefix="../../../../artifacts/$target/" \
            -jobs={{fuzz_jobs}} -workers={{fuzz_jobs}} \
            -max_total_time={{fuzz_seconds}} -runs={{fuzz_runs}} -print_final_stats=1 {{fuzz_args}} \
            > libfuzzer.out 2>&1) || status=$?
        grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY)|panicked|ERROR' \
            "$logs"/fuzz-*.log || true
        # A process that crashed, or never finished (killed), fails the run.
        if [ "$status" -ne 0 ] || grep -qE '^SUMMARY|panicked|ERROR: libFuzzer' "$logs"/fuzz-*.log \
            || [ "$(grep -l '^Done ' "$logs"/fuzz-*.log | wc -l)" -ne {{fuzz_jobs}} ]; then
            echo "fuzz $target failed (exit $status): logs in $logs, inputs in $root/artifacts/$target" >&2
            exit 1
        fi
    done

# Calls made by `just soak` (`just soak_calls=200000 soak`).
soak_calls := "1000000"

# Soak: `soak_calls` mixed good and failing calls; fails unless memory stays flat (not in ci).
soak: setup
    cargo run --release -p xcs-tests --bin soak -- --calls {{soak_calls}}
