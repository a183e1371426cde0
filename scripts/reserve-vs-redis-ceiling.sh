#!/usr/bin/env bash
# Issue 5's figure in one run: the ceiling (Redis itself running our reserve script through
# redis-benchmark, one EVALSHA per request, fresh order ids and users on a sale with unlimited
# stock) and `flashsale bench accept` on the Redis backends right after it, with their ratio.
#
#   scripts/reserve-vs-redis-ceiling.sh [path/to/flashsale] [extra bench accept args...]
#
# Needs redis-server on 127.0.0.1:6379 and redis-benchmark/redis-cli (Debian `redis-tools`),
# jq. The script's keys live under a prefix of their own and are deleted afterwards.
set -euo pipefail

bin=${1:-target/release/flashsale}
shift || true
here=$(cd "$(dirname "$0")/.." && pwd)
redis=(redis-cli -h 127.0.0.1 -p 6379)
prefix="ceiling:$$:"

# The reserve script, as the inventory loads it (the raw string RESERVE in redis.rs).
script=$(awk '/^const RESERVE: &str = r"$/ {on=1; next} on && /^";$/ {exit} on {print}' \
  "$here/crates/inventory/src/stock/redis.rs")
sha=$("${redis[@]}" SCRIPT LOAD "$script")
sale="${prefix}stock:sale:1"
"${redis[@]}" HSET "$sale" ready 1 remaining 1000000000000 limit 1000000000000 \
  starts 0 ends 999999999999999 gen 1 >/dev/null
cleanup() {
  "${redis[@]}" --scan --pattern "${prefix}*" | xargs -r -n 500 "${redis[@]}" UNLINK >/dev/null
}
trap cleanup EXIT

now=$(date +%s%3N)
ceiling=$(redis-benchmark -h 127.0.0.1 -p 6379 -q -n 300000 -c 50 -r 100000000 \
  EVALSHA "$sha" 6 "$sale" "${sale}:held" "${prefix}stock:hold:__rand_int__" \
  "${prefix}stock:unconfirmed" "${prefix}stock:events" "${sale}:holds" \
  1 __rand_int__ 1 "$now" __rand_int__ | tr '\r' '\n' | grep 'requests per second' | tail -1)
echo "ceiling: redis-benchmark EVALSHA reserve, 50 connections: ${ceiling##*: }"
per_s=$(echo "$ceiling" | grep -oE '[0-9]+(\.[0-9]+)? requests per second' | awk '{print $1}')

report=$(mktemp)
# The spawned server's keys go under this run's prefix too, so the cleanup above takes them.
FLASHSALE_INVENTORY__STOCK=redis FLASHSALE_GATEWAY__LIMITS__BACKEND=redis \
  FLASHSALE_AUTH__SESSIONS=redis FLASHSALE_REDIS__KEY_PREFIX="$prefix" \
  "$bin" bench accept --spawn --users 20000 --redis-url redis://127.0.0.1:6379 \
  --json "$report" "$@"
accepted=$(jq -r '.load.accepted_per_s' "$report")
echo "accepted reservations/s: $accepted"
awk -v a="$accepted" -v c="$per_s" 'BEGIN { printf "ratio to the EVALSHA ceiling: %.2f\n", a / c }'

# The CPU budget: what one accepted buy cost each party on this machine, and what that allows.
jq -r --argjson ceiling "$per_s" '
  (.load.client_cpu_pct / 100 * 1e6 / .load.attempts_per_s) as $client
  | (.server_cpu_us_per_accepted + .redis_cpu_us_per_accepted + $client) as $all
  | "CPU per accepted buy: server \(.server_cpu_us_per_accepted | floor) µs + Redis \(.redis_cpu_us_per_accepted | floor) µs + bench client \($client | floor) µs = \($all | floor) µs",
    "  \(.cpus) cores at that cost: at most \(.cpus * 1e6 / $all | floor) buys/s; 0.5 × the ceiling (\($ceiling / 2 | floor)/s) needs at most \(.cpus * 1e6 / ($ceiling / 2) | floor) µs per buy in all"
' "$report"
rm -f "$report"
