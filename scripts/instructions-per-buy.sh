#!/usr/bin/env bash
# Instructions the server executes per buy request, counted by valgrind's callgrind.
#
# Wall-clock figures drift on shared machines; instruction counts do not (the same binary and
# load give the same count whatever else the machine runs), so this is how we compare two
# builds of the buy path. It starts `flashsale dev` under callgrind, prepares one shopper and a
# sale, drives POST /api/v1/sales/{id}/orders with wrk (16 connections, a fresh
# Idempotency-Key per request, rate limits off), and divides the instructions counted during
# the load by the requests served.
#
#   scripts/instructions-per-buy.sh [sold-out|accept] [BINARY]
#
#   sold-out  (default) a sale of 1 that is sold out: the local fast path of a rush
#   accept    a sale of 10^6 with a per-user limit of 10^6: every buy reserved, queued, persisted
#
# Needs valgrind, wrk, curl and jq (Debian: apt-get install valgrind wrk curl jq). BINARY
# defaults to target/release/flashsale. Annotate the profile it leaves with
# `callgrind_annotate --inclusive=yes FILE`.
set -euo pipefail

MODE=${1:-sold-out}
BIN=${2:-target/release/flashsale}
SECS=${SECS:-15}
case "$MODE" in
    sold-out) STOCK=1 ;;
    accept) STOCK=1000000 ;;
    *) echo "usage: $0 [sold-out|accept] [BINARY]" >&2; exit 2 ;;
esac
for tool in valgrind callgrind_control callgrind_annotate wrk curl jq; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is not installed" >&2; exit 2; }
done

WORK=$(mktemp -d)
OUT=$WORK/callgrind.out
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/buy.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  wrk.headers["Idempotency-Key"] = "k-" .. counter .. "-" .. math.random(1, 1000000000)
  return wrk.format("POST", nil, nil, '{"quantity":1}')
end
LUA

export FLASHSALE_ADMIN_EMAIL=admin@example.com FLASHSALE_ADMIN_PASSWORD=admin-password-123
export FLASHSALE_LOG=warn FLASHSALE_AUTH__ARGON2__MEMORY_KIB=1024 FLASHSALE_AUTH__ARGON2__ITERATIONS=1
for rule in BUY_PER_USER_SALE BUY_PER_IP LOGIN_PER_ACCOUNT LOGIN_PER_IP; do
    export "FLASHSALE_GATEWAY__LIMITS__$rule=off"
done
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" dev --http "127.0.0.1:$PORT" \
    --data-dir "$WORK/data" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break
    sleep 1
done

API=http://127.0.0.1:$PORT/api/v1
J='content-type: application/json'
UA='User-Agent: instructions-per-buy'
# Under valgrind the first requests are slow: retry until a login answers.
login() {
    local token=""
    for _ in $(seq 1 20); do
        token=$(curl -s -X POST "$API/sessions" -H "$J" -H "$UA" -d "$1" | jq -r '.token // empty')
        [ -n "$token" ] && break
        sleep 1
    done
    echo "$token"
}
curl -s -o /dev/null -X POST "$API/users" -H "$J" -H "$UA" \
    -d '{"email":"shopper@example.com","password":"correct horse battery"}'
TOKEN=$(login '{"email":"shopper@example.com","password":"correct horse battery"}')
ADMIN=$(login '{"email":"admin@example.com","password":"admin-password-123"}')
[ -n "$TOKEN" ] && [ -n "$ADMIN" ] || { echo "$0: login failed" >&2; exit 1; }
SALE=$(curl -s -X POST "$API/admin/sales" -H "authorization: Bearer $ADMIN" -H "$UA" -H "$J" -d '{
  "name": "instructions", "price_cents": 100, "stock": '"$STOCK"', "per_user_limit": '"$STOCK"',
  "starts_at": "'"$(date -u -d '-1 min' +%Y-%m-%dT%H:%M:%SZ)"'",
  "ends_at": "'"$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"'"}' | jq -r .id)
URL=$API/sales/$SALE/orders

# Warm up (the sale sells out here in sold-out mode), then count only the measured load.
wrk -t1 -c8 -d3s -s "$WORK/buy.lua" -H "$UA" -H "authorization: Bearer $TOKEN" -H "$J" "$URL" > /dev/null
callgrind_control -z "$SERVER" > /dev/null
REQUESTS=$(wrk -t1 -c16 -d"${SECS}s" -s "$WORK/buy.lua" -H "$UA" -H "authorization: Bearer $TOKEN" \
    -H "$J" "$URL" | awk '/requests in/ {print $1}')
callgrind_control -d "$SERVER" > /dev/null
TOTAL=$(callgrind_annotate "$OUT.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$MODE: $REQUESTS requests, $((TOTAL / REQUESTS)) instructions per request (profile: $OUT.1)"
