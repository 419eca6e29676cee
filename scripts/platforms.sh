#!/usr/bin/env bash
# Cross builds (README "Platforms"), then their tests under wine and qemu-user:
#   - Windows x86_64 (mingw): `vx6.exe`, run under wine by tests/e2e/test_platforms.py;
#   - macOS x86_64 and aarch64: the whole workspace, linked with cargo-zigbuild;
#   - routers: static musl `vx6` for aarch64 (and armv7 where its standard library can be
#     fetched), with the size-optimised `router` profile; aarch64 runs under qemu-user.
# Fails on any break. Needs root for apt-get and the namespace tests.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==== %s\n' "$*"; }

step "platforms: tools"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  pkgs=(gcc-mingw-w64-x86-64 wine64 qemu-user)
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
command -v cargo-zigbuild >/dev/null || python3 -m pip install --quiet ziglang cargo-zigbuild
rustup target add x86_64-pc-windows-gnu x86_64-apple-darwin aarch64-apple-darwin \
  aarch64-unknown-linux-musl >/dev/null

step "platforms: Windows (x86_64-pc-windows-gnu)"
cargo build --release --locked --target x86_64-pc-windows-gnu -p vx6-runtime-mio
# wine 8.0 lacks bcryptprimitives.dll (Rust's std calls its ProcessPrng on Windows 10+): a
# stand-in for the test only, beside the binary.
x86_64-w64-mingw32-gcc -shared -O2 -o target/x86_64-pc-windows-gnu/release/bcryptprimitives.dll \
  scripts/wine/prng.c -ladvapi32
cargo check --locked --target x86_64-pc-windows-gnu --workspace --exclude vx6-simulations

step "platforms: macOS (x86_64 and aarch64, linked with zig)"
for t in x86_64-apple-darwin aarch64-apple-darwin; do
  cargo zigbuild --locked --target "$t" --workspace
done

step "platforms: routers (static musl, router profile)"
cargo zigbuild --locked --profile router --target aarch64-unknown-linux-musl -p vx6-runtime-mio
ls -l target/aarch64-unknown-linux-musl/router/vx6
armv7=target/armv7-unknown-linux-musleabihf/router/vx6
rm -f "$armv7"
if rustup target add armv7-unknown-linux-musleabihf >/dev/null 2>&1; then
  cargo zigbuild --locked --profile router --target armv7-unknown-linux-musleabihf -p vx6-runtime-mio
elif rustup toolchain list | grep -q '^nightly' &&
  rustup component add rust-src --toolchain nightly >/dev/null 2>&1; then
  # No prebuilt standard library for armv7 musl on this mirror (HTTP 404): build it from source
  # with nightly, and let zig supply musl's start files (rustc's self-contained ones come with
  # the prebuilt library only).
  echo "armv7-unknown-linux-musleabihf: no prebuilt standard library; building it (-Zbuild-std)"
  RUSTFLAGS="-C link-self-contained=no" cargo +nightly zigbuild --locked \
    -Zbuild-std=std,panic_abort --profile router --target armv7-unknown-linux-musleabihf \
    -p vx6-runtime-mio
else
  echo "armv7-unknown-linux-musleabihf: neither a prebuilt standard library nor nightly with rust-src here; not built"
fi
if [ -x "$armv7" ]; then
  ls -l "$armv7"
  export VX6_ARMV7=1
fi

step "platforms: the builds at work (wine, qemu-user in namespaces)"
VX6_PLATFORMS=1 python3 -m pytest tests/e2e/test_platforms.py -q
