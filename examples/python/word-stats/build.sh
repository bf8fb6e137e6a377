#!/bin/sh
# Builds word-stats.wasm with componentize-py (`pip install componentize-py==0.25.1`).
set -eu
cd "$(dirname "$0")"
componentize-py -d wit -w word-stats componentize app -o word-stats.wasm
