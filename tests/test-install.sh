#!/usr/bin/env bash
# Installs the build into a scratch prefix, then builds a separate C project against it two
# ways: CMake find_package(spotlight) (shared and static) and pkg-config. Each must open a
# GGUF file through the public API. Usage: test-install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
python3 "$src/tests/fuzz/make-seeds.py" "$tmp/seeds"
want="arch=llama tensors=11"

cmake -S "$src/tests/consumer" -B "$tmp/consumer" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/consumer" >/dev/null
libdir=$(dirname "$(find "$tmp/prefix" -name 'libspotlight.so' | head -n 1)")
got=$(LD_LIBRARY_PATH="$libdir" "$tmp/consumer/consumer" "$tmp/seeds/tiny-llama.gguf")
[ "$got" = "$want" ] || { echo "find_package (shared): got '$got'"; exit 1; }
got=$("$tmp/consumer/consumer_static" "$tmp/seeds/tiny-llama.gguf")
[ "$got" = "$want" ] || { echo "find_package (static): got '$got'"; exit 1; }

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc "$src/tests/consumer/main.c" $(pkg-config --cflags --libs spotlight) -o "$tmp/pc-consumer"
got=$(LD_LIBRARY_PATH="$libdir" "$tmp/pc-consumer" "$tmp/seeds/tiny-llama.gguf")
[ "$got" = "$want" ] || { echo "pkg-config: got '$got'"; exit 1; }
echo "install: find_package (shared, static) and pkg-config consumers work"
