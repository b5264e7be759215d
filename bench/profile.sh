#!/usr/bin/env bash
# Records where a keyhole process spends its CPU under wrk, with perf, and
# names each cost (bench costs); then records the surface's floor under the
# same load and lists what keyhole spends more than it, per request, by
# innermost function (bench costdiff).
# Usage: bench/profile.sh [whoami|verify|auth] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
surface=${1:-whoami}; secs=${2:-8}
for tool in wrk perf jq curl; do
	command -v $tool >/dev/null || { echo "bench/profile.sh: $tool is not installed" >&2; exit 1; }
done
out=$(mktemp -d)
trap 'kill $pid $fpid 2>/dev/null || true; rm -rf "$out"' EXIT
fpid=
go build -o "$out/keyhole" .
go build -o "$out/bench" ./bench
addr=127.0.0.1:18181
tok=kh_admin_bench0000000000000000000000000000
"$out/keyhole" serve --addr $addr --db "$out/k.db" --admin-token $tok --rate-limits 1000000000/1s >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do curl -sf http://$addr/healthz >/dev/null && break; sleep 0.1; done
admin() { curl -sf -H "Authorization: Bearer $tok" -X POST "http://$addr/admin/v1$1" -d "$2"; }
org=$(admin /orgs '{"name":"bench"}' | jq -r .id)
key=$(admin "/orgs/$org/keys" '{"name":"bench","env":"live","scopes":["*"]}' | jq -r .key)
case $surface in
whoami) script="wrk.headers['Authorization']='Bearer $key'"; path=/api/v1/prod/whoami ;;
verify) script="wrk.method='POST'; wrk.headers['Content-Type']='application/json'; wrk.body='{\"key\":\"$key\",\"env\":\"live\"}'"; path=/v1/keys/verify ;;
auth) script="wrk.headers['Authorization']='Bearer $key'; wrk.headers['X-Original-URI']='/api/v1/prod/sms/send'; wrk.headers['X-Original-Method']='POST'"; path=/v1/auth ;;
*) echo "bench/profile.sh: unknown surface $surface" >&2; exit 2 ;;
esac
echo "$script" >"$out/s.lua"
hz=1999
# record PID ADDR NAME: perf of process PID under wrk; prints the requests wrk made
record() {
	wrk -t1 -c32 -d2s -s "$out/s.lua" "http://$2$path" >/dev/null # warm up
	perf record -q -F $hz -g -p "$1" -o "$out/$3.data" -- sleep "$secs" >/dev/null 2>&1 &
	local rec=$!
	wrk -t1 -c32 -d"${secs}s" -s "$out/s.lua" "http://$2$path" >"$out/$3.wrk"
	wait $rec || true
	perf script -F ip,sym -i "$out/$3.data" >"$out/$3.script" 2>/dev/null
	awk '/requests in/{print $1}' "$out/$3.wrk"
}
kreqs=$(record $pid $addr keyhole)
faddr=127.0.0.1:18182
"$out/bench" floor $faddr $surface >/dev/null 2>&1 &
fpid=$!
for _ in $(seq 50); do curl -s -o /dev/null http://$faddr/ && break; sleep 0.1; done
freqs=$(record $fpid $faddr floor)
echo "$surface, wrk -t1 -c32 -d${secs}s, perf record -F $hz -g: keyhole $kreqs requests, floor $freqs"
"$out/bench" costs <"$out/keyhole.script"
echo
"$out/bench" costdiff $hz "$out/keyhole.script" "$kreqs" "$out/floor.script" "$freqs"
