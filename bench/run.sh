#!/usr/bin/env bash
# VX6 tunnel benchmark (not a test): forwards the yardstick server of
# shared/bench/tunnel_bench.py through VX6 over QUIC and over TCP (the mio daemon), an embedded
# smol node over QUIC (runtime-smol's expose/connect examples), OpenSSH `ssh -L` and socat,
# on loopback or (--veth) across two network namespaces joined by a 1500-byte veth pair,
# measures every entry interleaved in one run, reports the idle RSS of the vx6 daemons and
# the CPU time they spent per GiB forwarded, and prints a markdown table (figures + the exact
# commands) on stdout. Progress and the yardstick's own table go to stderr.
#
#   bench/run.sh [--veth] [--pgbench[=SECONDS]] [--only vx6-quic,vx6-tcp,smol-quic,sshL,socat] [--out FILE.json] [--keep] [YARDSTICK ARGS...]
#
#   --veth        the server side (yardstick server, owners, sshd) in one namespace, the client
#                 side (yardstick, clients, ssh -L, socat) in another, joined by a veth pair of
#                 MTU 1500 (fd00:b6::1 and ::2): the shape of a real network, where loopback's
#                 64 KiB datagrams would hide per-packet cost. Needs root.
#   --pgbench[=S] after the yardstick, PostgreSQL's pgbench (select-only, 4 clients, S seconds
#                 per run, default 10) against a PostgreSQL server on the server side: directly,
#                 through vx6 over QUIC and TCP and through ssh -L, each with persistent
#                 connections and with -C (a new connection per transaction), interleaved.
#                 Needs PostgreSQL 15 (Debian: postgresql) and root.
#   --only LIST   entries to run (default all; also $BENCH_ONLY). `--only sshL,socat` needs no vx6.
#   --out FILE    keep the yardstick's JSON there (default: a temporary file)
#   --keep        keep the work directory (keys, configs, daemon logs) and print its path
#   anything else is passed to tunnel_bench.py, e.g. --mb 256 --rounds 3 --rr 2000 --connects 50
#
# Environment: VX6_BIN (default <repo>/target/release/vx6), VX6_EXAMPLES (default
# <repo>/target/release/examples), TUNNEL_BENCH (the yardstick),
# BENCH_PORT_BASE (default 4700: vx6 uses BASE+1..+12 and 7301/7302 local entries; see below).
# Installs openssh-server, openssh-client and socat with apt-get when they are missing (root).
set -euo pipefail

die() { echo "bench/run.sh: error: $*" >&2; exit 1; }
say() { echo "bench/run.sh: $*" >&2; }

here=$(cd "$(dirname "$0")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))
yard=${TUNNEL_BENCH:-$root/../shared/bench/tunnel_bench.py}
[ -f "$yard" ] && yard=$(realpath "$yard")
vx6=${VX6_BIN:-$root/target/release/vx6}
examples=${VX6_EXAMPLES:-$root/target/release/examples}

only=${BENCH_ONLY:-vx6-quic,vx6-tcp,smol-quic,sshL,socat}
out=""
keep=0
veth=0
pgbench=0
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --only) [ $# -ge 2 ] || die "--only needs a list"; only=$2; shift 2 ;;
    --only=*) only=${1#*=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a file"; out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --keep) keep=1; shift ;;
    --veth) veth=1; shift ;;
    --pgbench) pgbench=10; shift ;;
    --pgbench=*) pgbench=${1#*=}; [[ $pgbench =~ ^[1-9][0-9]*$ ]] || die "--pgbench wants whole seconds, not '$pgbench'"; shift ;;
    --json|--json=*) die "use --out FILE instead of --json" ;;
    -h|--help) sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done

q() { # shell-quote a word only when it needs it (keeps the printed commands readable)
  local plain='^[]A-Za-z0-9_@%+=:,./[-]+$'
  if [[ $1 =~ $plain ]]; then printf '%s' "$1"; else printf '%q' "$1"; fi
}
qcmd() { local out="" w; for w in "$@"; do out+="${out:+ }$(q "$w")"; done; printf '%s' "$out"; }
invocation="bench/run.sh $([ $veth = 1 ] && printf -- '--veth ')$([ $pgbench != 0 ] && printf -- '--pgbench=%s ' "$pgbench")$(qcmd --only "$only" ${out:+--out "$out"} "${pass[@]}")"
want() { case ",$only," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
for e in ${only//,/ }; do
  case "$e" in vx6-quic|vx6-tcp|smol-quic|sshL|socat) ;; *) die "unknown entry '$e' (known: vx6-quic,vx6-tcp,smol-quic,sshL,socat)" ;; esac
done

# ---- where things listen: loopback, or the two ends of the veth pair
if [ $veth = 1 ]; then
  srv_ns=vx6b-srv-$$ cli_ns=vx6b-cli-$$ o_host=fd00:b6::1 c_host=fd00:b6::2
else
  srv_ns="" cli_ns="" o_host=::1 c_host=::1
fi
# Prefixes that run a command in each side's namespace (nothing on loopback). Arrays, not a
# function, so that `"${in_srv[@]}" cmd &` is the command itself: $! is its pid (ip netns exec
# execs it), for the RSS and CPU read from /proc and for the TERM at cleanup.
in_srv=() in_cli=()
[ $veth = 1 ] && in_srv=(ip netns exec "$srv_ns") in_cli=(ip netns exec "$cli_ns")
base=${BENCH_PORT_BASE:-4700}
server_port=5301                      # the yardstick's sink/echo server (fixed by the brief)
q_owner=$((base + 1)); q_client=$((base + 2)); q_local=7301
t_owner=$((base + 11)); t_client=$((base + 12)); t_local=7302
s_owner=$((base + 31)); s_client=$((base + 32)); s_local=7303
sshd_port=$((base + 22)); sshl_port=6301
pg_port=$((base + 40)); q_pg=7311; t_pg=7312; sshl_pg=6311
pg_bin=/usr/lib/postgresql/15/bin
socat_port=6401

# ---- prerequisites
[ -f "$yard" ] || die "yardstick not found at $yard (set TUNNEL_BENCH)"
command -v python3 >/dev/null || die "python3 is missing"
if want vx6-quic || want vx6-tcp; then
  [ -x "$vx6" ] || die "vx6 binary not found at $vx6: run \`cargo build --release\` (or set VX6_BIN, or use --only sshL,socat)"
fi
need_pkgs=()
if want smol-quic; then
  [ -x "$examples/expose" ] && [ -x "$examples/connect" ] || die "runtime-smol examples not found in $examples: run \`cargo build --release -p vx6-runtime-smol --examples\`"
fi
if want sshL; then
  command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need_pkgs+=(openssh-client)
  [ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
fi
if want socat; then command -v socat >/dev/null || need_pkgs+=(socat); fi
if [ $pgbench != 0 ]; then
  [ "$(id -u)" = 0 ] || die "--pgbench needs root (it runs PostgreSQL as the postgres user)"
  [ -x "$pg_bin/postgres" ] && command -v pgbench >/dev/null || need_pkgs+=(postgresql)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "missing packages: ${need_pkgs[*]} (install them)"
  say "installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >&2
fi

busy() { # proto port [side] -> 0 if something listens there
  local pre=("${in_cli[@]}"); [ "${3:-cli}" = srv ] && pre=("${in_srv[@]}")
  [ -n "$("${pre[@]}" ss -Hln"$1" "sport = :$2" 2>/dev/null)" ]
}
check_free() {
  local proto=$1; shift
  for p in "$@"; do busy "$proto" "$p" && die "port $p/$([ "$proto" = t ] && echo tcp || echo udp) is in use (set BENCH_PORT_BASE)"; done
  return 0
}
if [ $veth = 0 ]; then # fresh namespaces have every port free
  check_free t "$server_port"
  want vx6-quic && { check_free u "$q_owner" "$q_client"; check_free t "$q_local"; }
  want vx6-tcp && check_free t "$t_owner" "$t_client" "$t_local"
  want smol-quic && { check_free u "$s_owner" "$s_client"; check_free t "$s_local"; }
  want sshL && check_free t "$sshd_port" "$sshl_port"
  want socat && check_free t "$socat_port"
  [ $pgbench != 0 ] && check_free t "$pg_port" "$q_pg" "$t_pg" "$sshl_pg"
fi

# ---- processes we start, and their cleanup
work=$(mktemp -d /tmp/vx6-bench.XXXXXX)
pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ $veth = 1 ]; then ip netns del "$srv_ns" 2>/dev/null || true; ip netns del "$cli_ns" 2>/dev/null || true; fi
  if [ $keep = 1 ]; then say "work directory kept: $work"; else rm -rf "$work"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ $veth = 1 ]; then
  [ "$(id -u)" = 0 ] || die "--veth needs root (network namespaces)"
  command -v ip >/dev/null || die "--veth needs ip (Debian: iproute2)"
  say "namespaces $srv_ns ($o_host) and $cli_ns ($c_host), veth MTU 1500"
  ip netns add "$srv_ns" && ip netns add "$cli_ns" || die "cannot create network namespaces"
  ip link add "vbs$$" netns "$srv_ns" mtu 1500 type veth peer name "vbc$$" netns "$cli_ns" mtu 1500 \
    || die "cannot create the veth pair"
  veth_up() { # namespace device address
    ip -n "$1" link set lo up && ip -n "$1" addr add "$3/64" dev "$2" nodad \
      && ip -n "$1" link set "$2" up || die "cannot set up $2 in $1"
  }
  veth_up "$srv_ns" "vbs$$" "$o_host"
  veth_up "$cli_ns" "vbc$$" "$c_host"
fi

wait_listen() { # proto port what pid [side]
  for _ in $(seq 150); do
    busy "$1" "$2" "${5:-cli}" && return 0
    kill -0 "$4" 2>/dev/null || die "$3 exited before listening on $2; log:
$(tail -20 "$work/$3.err" 2>/dev/null)"
    sleep 0.1
  done
  die "$3 not listening on port $2 after 15 s; log: $(tail -20 "$work/$3.err" 2>/dev/null)"
}

daemon_cmds=()
declare -A rss_pid=()

start_vx6() { # tag transport owner_port client_port local_port pg_local_port
  local tag=$1 tr=$2 op=$3 cp=$4 lp=$5 pp=$6 oid
  "$vx6" init --home "$work/$tag-owner" --name owner >/dev/null 2>"$work/$tag-init.err" || die "vx6 init failed: $(cat "$work/$tag-init.err")"
  "$vx6" init --home "$work/$tag-client" --name client >/dev/null 2>>"$work/$tag-init.err" || die "vx6 init failed: $(cat "$work/$tag-init.err")"
  oid=$("$vx6" id --home "$work/$tag-owner") || die "vx6 id failed"
  oid=${oid%%$'\n'*}
  local ocmd=("$vx6" node --home "$work/$tag-owner" --listen "[$o_host]:$op" --transport "$tr" --serve "bench=127.0.0.1:$server_port" --public)
  local ccmd=("$vx6" node --home "$work/$tag-client" --listen "[$c_host]:$cp" --transport "$tr" --forward "$oid@[$o_host]:$op/bench=127.0.0.1:$lp")
  if [ $pgbench != 0 ]; then
    ocmd+=(--serve "pg=127.0.0.1:$pg_port")
    ccmd+=(--forward "$oid@[$o_host]:$op/pg=127.0.0.1:$pp")
  fi
  "${in_srv[@]}" "${ocmd[@]}" >"$work/$tag-owner.out" 2>"$work/$tag-owner.err" &
  pids+=($!); rss_pid[$tag-owner]=$!
  wait_ready "$tag-owner" $!
  "${in_cli[@]}" "${ccmd[@]}" >"$work/$tag-client.out" 2>"$work/$tag-client.err" &
  pids+=($!); rss_pid[$tag-client]=$!
  wait_ready "$tag-client" $!
  daemon_cmds+=("$(qcmd "${ocmd[@]}")" "$(qcmd "${ccmd[@]}")")
}

start_smol() { # tag owner_port client_port local_port
  local tag=$1 op=$2 cp=$3 lp=$4 oid=""
  local ocmd=("$examples/expose" --name owner --listen "[$o_host]:$op" --service "bench=127.0.0.1:$server_port" --public)
  "${in_srv[@]}" "${ocmd[@]}" >"$work/$tag-owner.out" 2>"$work/$tag-owner.err" &
  pids+=($!); rss_pid[$tag-owner]=$!
  for _ in $(seq 300); do
    oid=$(sed -n 's/^node \([a-z2-7]*\) listening on .*/\1/p' "$work/$tag-owner.err" 2>/dev/null | head -1)
    [ -n "$oid" ] && break
    kill -0 "${rss_pid[$tag-owner]}" 2>/dev/null || die "$tag-owner exited; stderr: $(tail -20 "$work/$tag-owner.err")"
    sleep 0.1
  done
  [ -n "$oid" ] || die "$tag-owner printed no node id in 30 s"
  local ccmd=("$examples/connect" --name client --listen "[$c_host]:$cp" --forward "$oid@[$o_host]:$op/bench=127.0.0.1:$lp")
  "${in_cli[@]}" "${ccmd[@]}" >"$work/$tag-client.out" 2>"$work/$tag-client.err" &
  pids+=($!); rss_pid[$tag-client]=$!
  wait_listen t "$lp" "$tag-client" $!
  daemon_cmds+=("$(qcmd "${ocmd[@]}")" "$(qcmd "${ccmd[@]}")")
}

wait_ready() { # name pid
  for _ in $(seq 300); do
    grep -q '^ready ' "$work/$1.out" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || die "$1 exited before printing ready; stderr:
$(tail -20 "$work/$1.err")"
    sleep 0.1
  done
  die "$1 printed no ready line in 30 s; stderr:
$(tail -20 "$work/$1.err")"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }
# User + system CPU time of a process so far, in clock ticks (fields 14 and 15 of its stat;
# the name in field 2 has no spaces here).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo "?"; }

if [ $veth = 1 ]; then
  # What the tunnels lead to, on the server side (the yardstick on the client side starts a
  # server of its own too, which nothing uses).
  "${in_srv[@]}" python3 "$yard" --serve-only --server-port "$server_port" --server-host :: \
    >"$work/server.out" 2>"$work/server.err" &
  pids+=($!)
  wait_listen t "$server_port" server $! srv
fi

if [ $pgbench != 0 ]; then
  # PostgreSQL on the server side, for pgbench after the yardstick; it refuses to run as root.
  say "starting PostgreSQL on port $pg_port"
  chmod 711 "$work"
  install -d -o postgres -g postgres -m 700 "$work/pg" "$work/pgsock"
  setpriv --reuid=postgres --regid=postgres --init-groups \
    "$pg_bin/initdb" -D "$work/pg/data" -A trust -U postgres >"$work/initdb.out" 2>&1 \
    || die "initdb failed: $(tail -5 "$work/initdb.out")"
  # A throwaway cluster in a private namespace: the client across the veth may connect too.
  printf 'host all all ::/0 trust\nhost all all 0.0.0.0/0 trust\n' >>"$work/pg/data/pg_hba.conf"
  pg_listen=127.0.0.1; [ $veth = 1 ] && pg_listen="127.0.0.1,$o_host"
  "${in_srv[@]}" setpriv --reuid=postgres --regid=postgres --init-groups \
    "$pg_bin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pgsock" \
    -c "listen_addresses=$pg_listen" -c max_connections=50 -c fsync=off \
    >"$work/postgres.out" 2>"$work/postgres.err" &
  pids+=($!)
  wait_listen t "$pg_port" postgres $! srv
  "${in_srv[@]}" pgbench -q -i -s 10 -h 127.0.0.1 -p "$pg_port" -U postgres postgres \
    >"$work/pgbench-init.out" 2>&1 || die "pgbench -i failed: $(tail -5 "$work/pgbench-init.out")"
fi

entries=()
if want vx6-quic; then
  say "starting vx6 over QUIC"
  start_vx6 vx6-quic quic "$q_owner" "$q_client" "$q_local" "$q_pg"
  entries+=(--entry "vx6-quic=$q_local")
fi
if want vx6-tcp; then
  say "starting vx6 over TCP"
  start_vx6 vx6-tcp tcp "$t_owner" "$t_client" "$t_local" "$t_pg"
  entries+=(--entry "vx6-tcp=$t_local")
fi
if want smol-quic; then
  say "starting embedded smol nodes over QUIC"
  start_smol smol-quic "$s_owner" "$s_client" "$s_local"
  entries+=(--entry "smol-quic=$s_local")
fi
if want sshL; then
  ssh_host=127.0.0.1; [ $veth = 1 ] && ssh_host=$o_host
  say "starting sshd on $ssh_host port $sshd_port and ssh -L $sshl_port"
  mkdir -p "$work/ssh" && chmod 700 "$work/ssh"
  ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/client_key"
  cp "$work/ssh/client_key.pub" "$work/ssh/authorized_keys"
  cat >"$work/ssh/sshd_config" <<EOF
Port $sshd_port
ListenAddress $ssh_host
HostKey $work/ssh/host_key
PidFile $work/ssh/sshd.pid
AuthorizedKeysFile $work/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
AllowTcpForwarding yes
EOF
  mkdir -p /run/sshd
  /usr/sbin/sshd -t -f "$work/ssh/sshd_config" || die "sshd rejects its config"
  "${in_srv[@]}" /usr/sbin/sshd -D -e -f "$work/ssh/sshd_config" 2>"$work/sshd.err" &
  pids+=($!)
  wait_listen t "$sshd_port" sshd $! srv
  sshl_cmd=(ssh -F /dev/null -N -p "$sshd_port" -i "$work/ssh/client_key" -o IdentitiesOnly=yes
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes
    -o ExitOnForwardFailure=yes -L "$sshl_port:127.0.0.1:$server_port" "$(id -un)@$ssh_host")
  [ $pgbench != 0 ] && sshl_cmd+=(-L "$sshl_pg:127.0.0.1:$pg_port")
  "${in_cli[@]}" "${sshl_cmd[@]}" 2>"$work/sshL.err" &
  pids+=($!)
  wait_listen t "$sshl_port" sshL $!
  daemon_cmds+=("$(qcmd "${sshl_cmd[@]}")")
  entries+=(--entry "sshL=$sshl_port")
fi
if want socat; then
  say "starting socat on 127.0.0.1:$socat_port"
  socat_to="TCP:127.0.0.1:$server_port"; [ $veth = 1 ] && socat_to="TCP6:[$o_host]:$server_port"
  socat_cmd=(socat "TCP-LISTEN:$socat_port,bind=127.0.0.1,fork,reuseaddr" "$socat_to")
  "${in_cli[@]}" "${socat_cmd[@]}" 2>"$work/socat.err" &
  pids+=($!)
  wait_listen t "$socat_port" socat $!
  daemon_cmds+=("$(qcmd "${socat_cmd[@]}")")
  entries+=(--entry "socat=$socat_port")
fi

# ---- idle RSS before the run (daemons up, sessions not yet opened)
rss_start=() cpu_start=()
if [ ${#rss_pid[@]} -gt 0 ]; then
  sleep 2
  for k in $(printf '%s\n' "${!rss_pid[@]}" | sort); do
    rss_start+=("$k=$(rss_kb "${rss_pid[$k]}")")
    cpu_start+=("$k=$(cpu_ticks "${rss_pid[$k]}")")
  done
fi

json=${out:-$work/result.json}
if [ $veth = 1 ]; then
  # The first entry is the baseline: the server itself, across the veth.
  bench_cmd=(python3 "$yard" --server-port "$server_port" --entry "direct=[$o_host]:$server_port" "${entries[@]}" --json "$json" "${pass[@]}")
else
  bench_cmd=(python3 "$yard" --server-port "$server_port" --direct "${entries[@]}" --json "$json" "${pass[@]}")
fi
say "running: ${bench_cmd[*]}"
# in the background + wait, so that a TERM/INT to this script interrupts at once (and cleanup
# ends the yardstick too)
"${in_cli[@]}" "${bench_cmd[@]}" >&2 &
bench_pid=$!
pids+=("$bench_pid")
wait "$bench_pid" || die "the yardstick failed (daemon logs: rerun with --keep and look in the work directory)"

# ---- idle RSS after the run (sessions established, traffic over)
rss_end=() cpu_end=()
if [ ${#rss_pid[@]} -gt 0 ]; then
  for k in $(printf '%s\n' "${!rss_pid[@]}" | sort); do cpu_end+=("$k=$(cpu_ticks "${rss_pid[$k]}")"); done
  sleep 2
  for k in $(printf '%s\n' "${!rss_pid[@]}" | sort); do
    kill -0 "${rss_pid[$k]}" 2>/dev/null || die "$k died during the run; stderr: $(tail -20 "$work/$k.err")"
    rss_end+=("$k=$(rss_kb "${rss_pid[$k]}")")
  done
fi
# ---- pgbench: a real client, select-only transactions, persistent connections and -C
pg_results=$work/pgbench.tsv
: >"$pg_results"
pgbench_cmds=()
if [ $pgbench != 0 ]; then
  pg_entries=("direct=$([ $veth = 1 ] && echo "$o_host" || echo 127.0.0.1):$pg_port")
  want vx6-quic && pg_entries+=("vx6-quic=127.0.0.1:$q_pg")
  want vx6-tcp && pg_entries+=("vx6-tcp=127.0.0.1:$t_pg")
  want sshL && pg_entries+=("sshL=127.0.0.1:$sshl_pg")
  for mode in persistent new; do
    for e in "${pg_entries[@]}"; do
      name=${e%%=*} hp=${e#*=}
      cmd=(pgbench -n -S -T "$pgbench" -c 4 -j 2 -h "${hp%:*}" -p "${hp##*:}" -U postgres)
      [ $mode = new ] && cmd+=(-C)
      cmd+=(postgres)
      say "pgbench ($mode connections) through $name"
      "${in_cli[@]}" "${cmd[@]}" >"$work/pgbench-$name-$mode.out" 2>&1 \
        || die "pgbench through $name failed: $(tail -5 "$work/pgbench-$name-$mode.out")"
      tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$work/pgbench-$name-$mode.out" | head -1)
      lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$work/pgbench-$name-$mode.out" | head -1)
      printf '%s\t%s\t%s\t%s\n' "$name" "$mode" "${tps:-?}" "${lat:-?}" >>"$pg_results"
      [ $mode = persistent ] && [ "$name" = direct ] && pgbench_cmds+=("$(qcmd "${cmd[@]}")")
    done
  done
fi

# What the bulk phase moved per entry (the yardstick's defaults unless passed on).
mb=512 rounds=3
for ((i = 0; i < ${#pass[@]}; i++)); do
  case "${pass[$i]}" in
    --mb) mb=${pass[$((i + 1))]} ;; --mb=*) mb=${pass[$i]#*=} ;;
    --rounds) rounds=${pass[$((i + 1))]} ;; --rounds=*) rounds=${pass[$i]#*=} ;;
  esac
done

vx6_version=""
if want vx6-quic || want vx6-tcp; then vx6_version=$("$vx6" --version 2>/dev/null | head -1 || true); fi

# ---- the markdown report (stdout)
JSON="$json" INVOCATION="$invocation" BENCH_CMD="$(qcmd "${bench_cmd[@]}")" \
RSS_START="${rss_start[*]-}" RSS_END="${rss_end[*]-}" VX6_VERSION="$vx6_version" \
CPU_START="${cpu_start[*]-}" CPU_END="${cpu_end[*]-}" CLK_TCK="$(getconf CLK_TCK)" MB="$mb" ROUNDS="$rounds" \
VETH="$veth" PG_RESULTS="$pg_results" PG_CMD="${pgbench_cmds[*]-}" \
DAEMONS="$(printf '%s\n' "${daemon_cmds[@]-}")" python3 - <<'PY'
import json, os, platform, time
res = json.load(open(os.environ["JSON"]))
names = list(res)
base = res[names[0]]["throughput"]
where = "two namespaces joined by a 1500-byte veth" if os.environ["VETH"] == "1" else "loopback"
print(f"## Tunnel benchmark, {where}, {time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} cores, Linux {platform.release()})")
print()
print("| entry | MB/s | x direct | rr p50 µs | rr p99 µs | connect ms |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for n in names:
    r = res[n]
    print(f"| {n} | {r['throughput']:.0f} | {r['throughput'] / base:.3f} | {r['rr_p50']:.0f} | {r['rr_p99']:.0f} | {r['connect_ms']:.2f} |")
if "smol-quic" in res and "vx6-quic" in res:
    s, m = res["smol-quic"], res["vx6-quic"]
    print()
    print(f"Embedded smol node against the mio daemon, both over QUIC: throughput {s['throughput'] / m['throughput']:.2f}x, rr p50 {s['rr_p50'] / m['rr_p50']:.2f}x, connect {s['connect_ms'] / m['connect_ms']:.2f}x.")
start = dict(x.split("=") for x in os.environ["RSS_START"].split())
end = dict(x.split("=") for x in os.environ["RSS_END"].split())
if start:
    print()
    print("Idle RSS of the vx6 daemons and embedded nodes (VmRSS from /proc/PID/status, 2 s after start / 2 s after the run):")
    print()
    print("| daemon | idle after start (MiB) | idle after the run (MiB) |")
    print("| --- | ---: | ---: |")
    mib = lambda kb: f"{int(kb) / 1024:.1f}" if kb.isdigit() else kb
    for k in sorted(start):
        print(f"| {k} | {mib(start[k])} | {mib(end.get(k, '?'))} |")
cpu0 = dict(x.split("=") for x in os.environ["CPU_START"].split())
cpu1 = dict(x.split("=") for x in os.environ["CPU_END"].split())
gib = int(os.environ["ROUNDS"]) * int(os.environ["MB"]) / 1024
tags = sorted({k.rsplit("-", 1)[0] for k in cpu0})
if tags and gib > 0:
    tck = int(os.environ["CLK_TCK"])
    print()
    print(f"CPU seconds per GiB of bulk upload, owner and client together (all their CPU time during the run, over the {gib:g} GiB its bulk rounds moved):")
    print()
    print("| entry | CPU s/GiB |")
    print("| --- | ---: |")
    for t in tags:
        try:
            used = sum(int(cpu1[k]) - int(cpu0[k]) for k in cpu0 if k.rsplit("-", 1)[0] == t) / tck
            print(f"| {t} | {used / gib:.2f} |")
        except (KeyError, ValueError):
            print(f"| {t} | ? |")
pg = {}
for line in open(os.environ["PG_RESULTS"]):
    name, mode, tps, lat = line.rstrip("\n").split("\t")
    try:
        tps = f"{float(tps):.0f}"
    except ValueError:
        pass
    pg.setdefault(name, {})[mode] = (tps, lat)
if pg:
    def ratio(name, mode):
        try:
            return f"{float(pg[name][mode][0]) / float(pg['sshL'][mode][0]):.2f}"
        except (KeyError, ValueError, ZeroDivisionError):
            return "–"
    print()
    print("pgbench, select-only, 4 clients: transactions per second and average latency, with persistent connections and with a new connection per transaction (-C); x ssh -L is the TPS ratio:")
    print()
    print("| entry | TPS | latency ms | x ssh -L | TPS (-C) | latency ms (-C) | x ssh -L (-C) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, modes in pg.items():
        p, n = modes.get("persistent", ("?", "?")), modes.get("new", ("?", "?"))
        print(f"| {name} | {p[0]} | {p[1]} | {ratio(name, 'persistent')} | {n[0]} | {n[1]} | {ratio(name, 'new')} |")
    print()
    print(f"pgbench (direct; the others differ in host and port, and -C): `{os.environ['PG_CMD']}`")
print()
if os.environ.get("VX6_VERSION"):
    print(f"vx6: `{os.environ['VX6_VERSION']}`")
    print()
print(f"Command: `{os.environ['INVOCATION']}`")
print()
print(f"Yardstick: `{os.environ['BENCH_CMD'].strip()}`")
daemons = [d.strip() for d in os.environ["DAEMONS"].splitlines() if d.strip()]
if daemons:
    print()
    print("Forwarders:")
    print()
    for d in daemons:
        print(f"- `{d}`")
print()
print("MB/s: bulk upload on one connection, best of the rounds; rr: 64-byte request/response on one open connection; connect: median time to the first echoed byte on a new connection. Same run, interleaved; noise between runs is about ±25%.")
PY
