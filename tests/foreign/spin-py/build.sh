#!/bin/sh
# Builds spin-py.wasm with componentize-py.
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w spin-py componentize app -o spin-py.wasm
