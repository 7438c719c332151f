#!/usr/bin/env bash
# The main job on a fresh machine: install, start the lab with the quick-start example, make
# allowed and denied traffic, and show the flows with their verdicts. The lab stays up; remove
# it with `bin/membrane down`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
m=bin/membrane

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "membrane up -f examples/quickstart"
$m up -f examples/quickstart/
$m get pods -A -o wide
$m get endpoints -A

api_ip=$($m get pods -n shop -o json | bin/node -e '
  let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
    const p = JSON.parse(s).items.find((x) => x.metadata.labels?.app === "api");
    process.stdout.write(p?.status?.podIP ?? "");
  });')
[ -n "$api_ip" ] || { echo "demo: the api pod has no IP" >&2; exit 1; }

say "client -> http://api.shop.svc.cluster.local (DNS through the proxy, ClusterIP, allowed by api-ingress and client-egress)"
$m exec -n shop client -- curl -sS --max-time 3 "http://api.shop.svc.cluster.local/hello" | head -c 400; echo
say "client -> example.com (denied: the DNS rules allow only cluster names, so the lookup is refused)"
$m exec -n shop client -- curl -sS --max-time 3 "http://example.com/" && echo "unexpected: allowed" || echo "refused, as the policy says"
say "client -> api:9090 metrics (denied: only tier=backend may scrape)"
$m exec -n shop client -- curl -sS --max-time 2 "http://$api_ip:9090/" && echo "unexpected: allowed" || echo "denied, as the policy says"
say "intruder -> api:8080 (denied: not selected by api-ingress)"
$m exec -n shop intruder -- curl -sS --max-time 2 "http://$api_ip:8080/" && echo "unexpected: allowed" || echo "denied, as the policy says"

sleep 1
say "membrane observe --namespace shop --last 40"
$m observe --namespace shop --last 40
say "membrane observe --verdict DROPPED --last 5"
$m observe --verdict DROPPED --last 5
say "membrane status"
$m status || true
printf '\nThe lab is up. Try: %s observe --follow | %s policy trace -f examples/quickstart --from shop/intruder --to shop/api --port 8080/TCP | %s down\n' "$m" "$m" "$m"
