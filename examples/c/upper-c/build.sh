#!/bin/sh
# Builds upper-c.wasm: bindings with `wit-bindgen c` (cargo install
# wit-bindgen-cli), a core module with clang for wasm32-wasi against
# wasi-libc (Debian: clang lld wasi-libc libclang-rt-14-dev-wasm32), and
# the component with `wasm-tools component new` (cargo install wasm-tools).
# The module imports no WASI (only the xcs contract), so no adapter is
# needed.
set -eu
cd "$(dirname "$0")"
wit-bindgen c wit --world upper-c --out-dir gen
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror \
    -o upper-c.core.wasm app.c gen/upper_c.c gen/upper_c_component_type.o
wasm-tools component new upper-c.core.wasm -o upper-c.wasm
