#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) with AddressSanitizer, seeding the corpora
# with real records made by the vx6 binary. Needs the nightly toolchain and cargo-fuzz.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# Seeds: a real registry file and the signed record inside it.
cargo build --quiet --bin vx6
seed_home=$(mktemp -d)
trap 'rm -rf "$seed_home"' EXIT
./target/debug/vx6 init --home "$seed_home/n" --name seed >/dev/null 2>&1
mkdir -p fuzz/corpus/registry_load fuzz/corpus/record_decode fuzz/corpus/record_body \
  fuzz/corpus/mux_frames fuzz/corpus/service_wire
python3 - "$seed_home/n/registry.bin" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
open("fuzz/corpus/registry_load/seed-file", "wb").write(b"\x00" + data)
open("fuzz/corpus/registry_load/seed-payload", "wb").write(b"\x01" + data[38:])
def varint(b, i):
    v = s = 0
    while True:
        v |= (b[i] & 0x7F) << s; s += 7; i += 1
        if b[i - 1] < 0x80: return v, i
p = data[38:]
_, i = varint(p, 0)
n, i = varint(p, i)
record = p[i:i + n]
open("fuzz/corpus/record_decode/seed-claim", "wb").write(record)
open("fuzz/corpus/record_body/seed-claim", "wb").write(record[1:2] + record[98:])
# Multiplexer frames (docs/PROTOCOL.md): DATA on peer stream 2 with FIN, WINDOW, PING, RESET.
def frame(ty, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([ty, flags]) + stream.to_bytes(4, "big") + payload
frames = (frame(0, 0, 2, b"\x01\x03ssh") + frame(1, 0, 2, (65536).to_bytes(4, "big"))
          + frame(3, 0, 0, bytes(8)) + frame(0, 1, 4, b"x") + frame(2, 0, 4, bytes(4)))
open("fuzz/corpus/mux_frames/seed-frames", "wb").write(b"\x05" + frames)
open("fuzz/corpus/service_wire/seed-request", "wb").write(b"\x01\x03ssh")
open("fuzz/corpus/service_wire/seed-pins", "wb").write(b"[fd6a::1]:4433 " + b"a" * 51 + b"a\n")
PY

for t in "${targets[@]}"; do
  echo "== fuzz target $t for ${seconds}s"
  (cd fuzz && cargo +nightly fuzz run "$t" -- -max_total_time="$seconds" -print_final_stats=1 2>&1) \
    | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done|==[0-9]+==ERROR|SUMMARY)' || true
  # A crash leaves an artifact and a non-zero exit; re-check so the script fails loudly.
  if compgen -G "fuzz/artifacts/$t/[a-z]*-*" >/dev/null; then
    echo "fuzz target $t found a failing input: $(ls fuzz/artifacts/$t/)" >&2
    exit 1
  fi
done
