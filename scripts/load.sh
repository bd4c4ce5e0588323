#!/usr/bin/env bash
# Load test of the ext_authz gRPC API over loopback, with a gRPC floor measured in the same run.
#
# Builds the release binary, starts `portcullis dev` (a loopback OIDC issuer plus the real server
# with reflection), checks the decisions functionally, then measures with two independent clients:
#   ghz    : grpc.health.v1.Health/Check (baseline), Authorization/Check with a valid RS256 token,
#            Authorization/Check without a token (deny path), all closed-loop (as fast as possible),
#            then health and the valid Check again at a fixed rate (latency when not saturated)
#   h2load : the same three as pre-encoded gRPC frames posted over h2c
# and prints rps, p50, p99, the ratio to the health baseline of the same tool, and the server's CPU
# time per request. The table replaces the marked section of docs/performance.md.
#
# Knobs (environment): DURATION (seconds per scenario, default 15), WARMUP (default 2),
# GHZ_CONCURRENCY (64), GHZ_CONNECTIONS (4), H2_CLIENTS (4), H2_STREAMS (16),
# RATE (fixed-rate ghz runs of health and the valid Check at this many rps, default 1000; 0 skips them),
# AUTHZ_ADDR (127.0.0.1:50151), HTTP_ADDR (127.0.0.1:9191), RUST_LOG (server log filter, default info),
# DOC (docs/performance.md; set DOC= to skip writing), NO_INSTALL=1 (never install tools),
# PORTCULLIS_BIN (use this binary instead of building one; PORTCULLIS_REVISION labels it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-2}"
GHZ_CONCURRENCY="${GHZ_CONCURRENCY:-64}"
GHZ_CONNECTIONS="${GHZ_CONNECTIONS:-4}"
H2_CLIENTS="${H2_CLIENTS:-4}"
H2_STREAMS="${H2_STREAMS:-16}"
RATE="${RATE:-1000}"
AUTHZ_ADDR="${AUTHZ_ADDR:-127.0.0.1:50151}"
HTTP_ADDR="${HTTP_ADDR:-127.0.0.1:9191}"
DOC="${DOC-docs/performance.md}"
export RUST_LOG="${RUST_LOG:-info}"

case "$AUTHZ_ADDR" in
  127.*|localhost:*|\[::1\]:*) ;;
  *) echo "AUTHZ_ADDR must be a loopback address, got $AUTHZ_ADDR" >&2; exit 2 ;;
esac

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
GOBIN_DIR=""
if command -v go >/dev/null 2>&1; then
  GOBIN_DIR="$(go env GOBIN)"
  [ -n "$GOBIN_DIR" ] || GOBIN_DIR="$(go env GOPATH)/bin"
  PATH="$PATH:$GOBIN_DIR"
fi
PATH="$PATH:$HOME/go/bin"

apt_install() {
  [ "${NO_INSTALL:-0}" = 1 ] && die "missing $* (NO_INSTALL=1)"
  command -v apt-get >/dev/null 2>&1 || die "missing $* and no apt-get; install it by hand"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  log "installing $* with apt-get"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

go_install() { # binary module
  command -v "$1" >/dev/null 2>&1 && return
  [ "${NO_INSTALL:-0}" = 1 ] && die "missing $1 (NO_INSTALL=1)"
  command -v go >/dev/null 2>&1 || die "missing $1 and no Go toolchain to install it with"
  log "installing $1 with go install $2@latest"
  go install "$2@latest"
}

need_apt=()
command -v h2load >/dev/null 2>&1 || need_apt+=(nghttp2-client)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/struct.proto ] || need_apt+=(libprotobuf-dev)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
[ "${#need_apt[@]}" -eq 0 ] || apt_install "${need_apt[@]}"
go_install ghz github.com/bojand/ghz/cmd/ghz
go_install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl

# ---------------------------------------------------------------- build and start
if [ -n "${PORTCULLIS_BIN:-}" ]; then
  BIN="$PORTCULLIS_BIN"
  REVISION="${PORTCULLIS_REVISION:-prebuilt binary}"
  log "using the prebuilt binary $BIN"
else
  REVISION="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  if ! git diff --quiet HEAD -- src Cargo.toml Cargo.lock build.rs proto 2>/dev/null; then REVISION="$REVISION+local-changes"; fi
  log "building the release binary"
  cargo build --release --locked --bin portcullis
  BIN="$(cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/portcullis"
fi
[ -x "$BIN" ] || die "no binary at $BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/portcullis-load.XXXXXX")"
SERVER_PID=""
CLIENT_PID=""
# Runs a load client in the background and waits, so a signal is handled at once, not when it ends.
client() { "$@" & CLIENT_PID=$!; wait "$CLIENT_PID"; local rc=$?; CLIENT_PID=""; return "$rc"; }
cleanup() {
  if [ -n "$CLIENT_PID" ]; then kill -TERM "$CLIENT_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting portcullis dev on $AUTHZ_ADDR (RUST_LOG=$RUST_LOG)"
# `dev` writes its sample CheckRequests to $TMPDIR/portcullis-dev; keep them in our work dir.
TMPDIR="$WORK" "$BIN" dev --authz "$AUTHZ_ADDR" --http "$HTTP_ADDR" \
  >"$WORK/server.out" 2>"$WORK/server.log" &
SERVER_PID=$!
REQS="$WORK/portcullis-dev"
for _ in $(seq 1 300); do
  [ -s "$REQS/valid.json" ] && [ -s "$REQS/no-token.json" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "the server exited"; }
  sleep 0.1
done
[ -s "$REQS/valid.json" ] || die "the server did not write its sample requests"

grpc() { grpcurl -plaintext "$@"; }
health="$(grpc -d '{"service":""}' "$AUTHZ_ADDR" grpc.health.v1.Health/Check)"
grep -q SERVING <<<"$health" || die "health is not SERVING: $health"

# ---------------------------------------------------------------- functional checks (ghz and h2load cannot see decisions)
decision() { # file -> rpc status code inside CheckResponse (0 = allow)
  grpc -emit-defaults -d @ "$AUTHZ_ADDR" envoy.service.auth.v3.Authorization/Check <"$1" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status", {}).get("code", 0))'
}
[ "$(decision "$REQS/valid.json")" = 0 ] || die "valid.json is not allowed"
[ "$(decision "$REQS/no-token.json")" = 16 ] || die "no-token.json is not denied with UNAUTHENTICATED"
log "decisions: valid -> allow, no-token -> deny (UNAUTHENTICATED)"

# ---------------------------------------------------------------- gRPC frames for h2load
PROTO_ARGS=(-I "$ROOT/proto/vendor" -I /usr/include envoy/service/auth/v3/external_auth.proto)
frame() { # request.json -> frame.bin (flag 0, 4-byte big-endian length, CheckRequest bytes)
  python3 - "$1" >"$WORK/req.txtpb" <<'PY'
import json, sys
MAPS = {"headers", "context_extensions", "contextExtensions"}
def esc(s): return json.dumps(s, ensure_ascii=False)
def emit(obj, depth=0):
    pad = "  " * depth
    for key, value in obj.items():
        if key in MAPS:
            for k, v in value.items():
                print(f"{pad}{key} {{ key: {esc(k)} value: {esc(v)} }}")
        elif isinstance(value, dict):
            print(f"{pad}{key} {{"); emit(value, depth + 1); print(f"{pad}}}")
        elif isinstance(value, bool):
            print(f"{pad}{key}: {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            print(f"{pad}{key}: {value}")
        else:
            print(f"{pad}{key}: {esc(value)}")
emit(json.load(open(sys.argv[1])))
PY
  protoc --encode=envoy.service.auth.v3.CheckRequest "${PROTO_ARGS[@]}" <"$WORK/req.txtpb" >"$WORK/req.pb"
  python3 -c 'import struct,sys; b=open(sys.argv[1],"rb").read(); sys.stdout.buffer.write(struct.pack(">BI",0,len(b))+b)' \
    "$WORK/req.pb" >"$2"
}
frame "$REQS/valid.json" "$WORK/valid.bin"
frame "$REQS/no-token.json" "$WORK/no-token.bin"
printf '\0\0\0\0\0' >"$WORK/health.bin" # HealthCheckRequest{service: ""} is zero bytes

# A protoset for ghz: older ghz releases speak only v1alpha reflection, the server serves v1.
mkdir -p "$WORK/proto/grpc/health/v1"
cat >"$WORK/proto/grpc/health/v1/health.proto" <<'PROTO'
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
PROTO
protoc -I "$ROOT/proto/vendor" -I /usr/include -I "$WORK/proto" --include_imports \
  --descriptor_set_out="$WORK/load.protoset" envoy/service/auth/v3/external_auth.proto grpc/health/v1/health.proto

h2_check() { # frame -> rpc status code inside the CheckResponse, via curl over h2c
  curl -sS --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$1" "http://$AUTHZ_ADDR/envoy.service.auth.v3.Authorization/Check" -o "$WORK/resp.bin"
  tail -c +6 "$WORK/resp.bin" \
    | protoc --decode=envoy.service.auth.v3.CheckResponse "${PROTO_ARGS[@]}" >"$WORK/resp.txt"
  # status { code: N } is absent for OK; the first code: line under status is the decision.
  python3 -c 'import re,sys; t=open(sys.argv[1]).read(); m=re.search(r"^status \{\s*code: (\d+)", t, re.M); print(m.group(1) if m else 0)' \
    "$WORK/resp.txt"
}
[ "$(h2_check "$WORK/valid.bin")" = 0 ] || die "the valid frame is not allowed"
[ "$(h2_check "$WORK/no-token.bin")" = 16 ] || die "the no-token frame is not denied"
log "frames: valid $(stat -c %s "$WORK/valid.bin") B -> allow, no-token $(stat -c %s "$WORK/no-token.bin") B -> deny"

# ---------------------------------------------------------------- measurement
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }

# Newer ghz can skip Go-template processing of the data (faster; tokens never contain "{{").
GHZ_EXTRA=()
if ghz --help 2>&1 | grep -q -- --disable-template-data; then GHZ_EXTRA+=(--disable-template-data); fi

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

run_ghz() { # name rate call data-args... (rate 0 = closed loop)
  local name="$1" rate="$2" call="$3"; shift 3
  local rate_args=()
  [ "$rate" = 0 ] || rate_args=(--rps "$rate")
  log "ghz $name: ${DURATION}s, -c $GHZ_CONCURRENCY --connections $GHZ_CONNECTIONS ${rate_args[*]}"
  client ghz --insecure --protoset "$WORK/load.protoset" --call "$call" "$@" "${GHZ_EXTRA[@]}" \
    -c "$GHZ_CONCURRENCY" --connections "$GHZ_CONNECTIONS" -z "${WARMUP}s" -t 200ms \
    -O json -o /dev/null "$AUTHZ_ADDR" >/dev/null
  local before after
  before="$(cpu_ticks)"
  client ghz --insecure --protoset "$WORK/load.protoset" --call "$call" "$@" "${GHZ_EXTRA[@]}" "${rate_args[@]}" \
    -c "$GHZ_CONCURRENCY" --connections "$GHZ_CONNECTIONS" -z "${DURATION}s" --duration-stop wait -t 200ms \
    -O json -o "$WORK/ghz-$name.json" "$AUTHZ_ADDR" >/dev/null
  after="$(cpu_ticks)"
  python3 - "$WORK/ghz-$name.json" "$name" "$((after - before))" "$CLK_TCK" "$rate" >>"$RESULTS" <<'PY'
import json, sys
report, name, ticks, clk = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rate = int(sys.argv[5])
pct = {int(p["percentage"]): p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
codes = report.get("statusCodeDistribution") or {}
count = report["count"]
print(json.dumps({
    "tool": "ghz", "rate": rate, "name": name, "count": count, "rps": report["rps"],
    "p50": pct.get(50), "p99": pct.get(99),
    "errors": count - codes.get("OK", 0),
    "cpu_us": ticks / clk * 1e6 / max(count, 1),
}))
PY
}

run_h2load() { # name path frame
  local name="$1" path="$2" body="$3"
  log "h2load $name: ${DURATION}s, -c $H2_CLIENTS -m $H2_STREAMS"
  local args=(-t 1 -c "$H2_CLIENTS" -m "$H2_STREAMS" -d "$body"
    -H 'content-type: application/grpc' -H 'te: trailers' "http://$AUTHZ_ADDR$path")
  client h2load -D "$WARMUP" "${args[@]}" >/dev/null
  local before after
  before="$(cpu_ticks)"
  client h2load -D "$DURATION" --log-file "$WORK/h2load-$name.log" "${args[@]}" >"$WORK/h2load-$name.out"
  after="$(cpu_ticks)"
  python3 - "$WORK/h2load-$name.log" "$WORK/h2load-$name.out" "$name" "$((after - before))" "$CLK_TCK" \
    "$DURATION" >>"$RESULTS" <<'PY'
import json, re, sys
log, out, name = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
ticks, clk, duration = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
lat, errors = [], 0
for line in open(log):
    cols = line.split("\t")
    if len(cols) < 3:
        continue
    if cols[1] != "200":
        errors += 1
    lat.append(int(cols[2]) / 1000.0)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] if lat else None
m = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
print(json.dumps({
    "tool": "h2load", "rate": 0, "name": name, "count": len(lat), "rps": float(m.group(1)) if m else len(lat) / duration,
    "p50": q(50), "p99": q(99), "errors": errors,
    "cpu_us": ticks / clk * 1e6 / max(len(lat), 1),
}))
PY
}

run_ghz health 0 grpc.health.v1.Health.Check -d '{"service":""}'
run_ghz valid 0 envoy.service.auth.v3.Authorization.Check -D "$REQS/valid.json"
run_ghz no-token 0 envoy.service.auth.v3.Authorization.Check -D "$REQS/no-token.json"
if [ "$RATE" != 0 ]; then
  run_ghz health "$RATE" grpc.health.v1.Health.Check -d '{"service":""}'
  run_ghz valid "$RATE" envoy.service.auth.v3.Authorization.Check -D "$REQS/valid.json"
fi
run_h2load health /grpc.health.v1.Health/Check "$WORK/health.bin"
run_h2load valid /envoy.service.auth.v3.Authorization/Check "$WORK/valid.bin"
run_h2load no-token /envoy.service.auth.v3.Authorization/Check "$WORK/no-token.bin"

kill -0 "$SERVER_PID" 2>/dev/null || die "the server died during the run"

# ---------------------------------------------------------------- report
CPU_MODEL="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
H2LOAD_VERSION="$(h2load --version 2>/dev/null | head -1)"
GHZ_VERSION="$(ghz --version 2>/dev/null | head -1)"
if [ -z "$GHZ_VERSION" ] || [ "$GHZ_VERSION" = dev ]; then # go-installed builds print "dev"
  GHZ_VERSION="$(go version -m "$(command -v ghz)" 2>/dev/null | awk '$1 == "mod" {print $3}')"
fi

TABLE="$(python3 - "$RESULTS" <<PY
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
group = lambda r: (r["tool"], r["rate"])
base = {group(r): r for r in rows if r["name"] == "health"}
labels = {
    "health": "grpc.health.v1.Health/Check (baseline)",
    "valid": "Authorization/Check, valid RS256 token (allow)",
    "no-token": "Authorization/Check, no token (deny)",
}
ms = lambda v: "-" if v is None else f"{v:.3f}"
ratio = lambda a, b: "-" if not a or not b else f"{a / b:.2f}"
print("| tool | load | scenario | requests | rps | p50 ms | p99 ms | errors | rps / baseline | p50 / baseline | p99 / baseline | server CPU µs/req |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    b = base.get(group(r), {})
    load = "max" if r["rate"] == 0 else f"{r['rate']} rps"
    print(f"| {r['tool']} | {load} | {labels[r['name']]} | {r['count']} | {r['rps']:.0f} | {ms(r['p50'])} | {ms(r['p99'])} "
          f"| {r['errors']} | {ratio(r['rps'], b.get('rps'))} | {ratio(r['p50'], b.get('p50'))} "
          f"| {ratio(r['p99'], b.get('p99'))} | {r['cpu_us']:.1f} |")
PY
)"

SECTION="$(cat <<EOF
<!-- load:begin (generated by scripts/load.sh; edits inside are overwritten) -->
Run: $(date -u '+%Y-%m-%d %H:%M UTC') · revision \`$REVISION\` · $(nproc) CPUs · ${CPU_MODEL:-unknown CPU} · Linux $(uname -r)
· client and server share the machine · ${DURATION} s per scenario after ${WARMUP} s warm-up · server log filter \`$RUST_LOG\`

ghz ${GHZ_VERSION:-?}: \`-c $GHZ_CONCURRENCY --connections $GHZ_CONNECTIONS -t 200ms\` (protoset; proto3 JSON requests written by \`portcullis dev\`).
${H2LOAD_VERSION:-h2load}: \`-t 1 -c $H2_CLIENTS -m $H2_STREAMS\` (pre-encoded gRPC frames: valid $(stat -c %s "$WORK/valid.bin") B, no-token $(stat -c %s "$WORK/no-token.bin") B, health 5 B).
Load "max" is closed-loop (every client keeps its streams busy); "$RATE rps" is ghz's fixed-rate mode.
Ratios are against the health Check measured by the same tool at the same load in the same run. "server CPU µs/req" is the
server process's user+system CPU time over the run divided by the requests served.

$TABLE
<!-- load:end -->
EOF
)"

echo
echo "$SECTION"

if [ -n "$DOC" ]; then
  mkdir -p "$(dirname "$DOC")"
  [ -f "$DOC" ] || printf '# Performance\n\n' >"$DOC"
  python3 - "$DOC" "$SECTION" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2]
text = open(path).read()
pattern = re.compile(r"<!-- load:begin.*?<!-- load:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
PY
  log "wrote the load section of $DOC"
fi
