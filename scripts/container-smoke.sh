#!/usr/bin/env bash
# The container smoke test: the four services as containers of the finpay image, shaped like the
# Kubernetes manifests, against this machine's PostgreSQL. Not part of CI (it needs a Docker daemon
# and a few minutes); see deploy/README.md.
#
#   bash scripts/image.sh && bash scripts/container-smoke.sh
#
# What it does:
#   - renders deploy/k8s/overlays/dev and takes from it each workload's replicas and args and the
#     seed Job's args, so the containers run what the pods run;
#   - mounts the ConfigMaps' TOML files (deploy/k8s/base/config/, the configMapGenerator's sources)
#     read-only at /etc/finpay; the secrets come from 0600 env files (--env-file), as the pods get
#     them from the Secret; where the host network needs it, FINPAY_* env and --set overrides move
#     each replica to a free port on 127.0.0.1, name this run's schemas and list payment's replicas;
#   - every container: --network host, --read-only, --user 10001:10001, --cap-drop ALL,
#     no-new-privileges, --restart=always;
#   - opens the accounts with the seed Job's command (twice: it must be idempotent), then sends
#     `finpay load --requests 5000` through payment's shared public port, kills a fraud container
#     during the load and waits for Docker to restart it. The kill is a SIGKILL of the container's
#     process from the host, a crash as Docker sees it: `docker kill` itself marks the container
#     as stopped by hand, and Docker (20.10 here) then does not apply --restart=always;
#   - runs `finpay check` against the run's schemas; removes every container it started (by id) and
#     drops the schemas, also on failure.
# Prints one JSON line with the figures and exits 0 when every payment succeeded, the killed
# container came back and the check did not fail (a check the binary cannot run yet is reported as
# "unavailable").
#
# Environment: FINPAY_IMAGE (default finpay:local), FINPAY_SMOKE_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/postgres; ?sslmode=require is tried first).
# shellcheck disable=SC2154  # REPLICAS_<svc> and ARGS_<svc> come from the rendered manifests
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

IMAGE=${FINPAY_IMAGE:-finpay:local}
DB_BASE=${FINPAY_SMOKE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REQUESTS=5000
PREFIX="smoke_$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
START=$SECONDS

say() { printf 'container-smoke: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

RUN_DIR=$(mktemp -d)
chmod 700 "$RUN_DIR"
CONTAINERS=()
SCHEMAS_CREATED=0

cleanup() {
  local rc=$?
  set +e
  if [ "$rc" -ne 0 ] && [ ${#CONTAINERS[@]} -gt 0 ]; then
    say "last log lines of each container:"
    for id in "${CONTAINERS[@]}"; do
      echo "--- $(docker inspect -f '{{.Name}}' "$id" 2>/dev/null)" >&2
      docker logs --tail 5 "$id" 2>&1 | sed 's/^/    /' >&2
    done
  fi
  # The load runs in a one-off container of its own; it is removed by id too, should the run end
  # during the load.
  [ -s "$RUN_DIR/load.cid" ] && CONTAINERS+=("$(cat "$RUN_DIR/load.cid")")
  for id in "${CONTAINERS[@]}"; do
    docker rm -f "$id" >/dev/null 2>&1
  done
  if [ "$SCHEMAS_CREATED" -eq 1 ]; then
    psql -q "$DB_BASE" -c "DROP SCHEMA IF EXISTS ${PREFIX}_wallet, ${PREFIX}_payments, ${PREFIX}_inbox CASCADE" \
      >/dev/null 2>&1 || say "could not drop the schemas ${PREFIX}_*"
  fi
  rm -rf "$RUN_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- preflight -------------------------------------------------------------------------------
docker info >/dev/null 2>&1 || die "no Docker daemon answers (scripts/image.sh starts one)"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: run scripts/image.sh first"
psql -q "$DB_BASE" -c 'select 1' >/dev/null 2>&1 || die "PostgreSQL at $DB_BASE does not answer"
command -v kubectl >/dev/null || die "kubectl (with kustomize) is needed to render the manifests"
command -v curl >/dev/null || die "curl is needed for the readiness waits"
python3 -c 'import yaml, tomllib' 2>/dev/null || die "python3 >= 3.11 with PyYAML is needed (pip install pyyaml)"

# --- what the manifests run --------------------------------------------------------------------
kubectl kustomize deploy/k8s/overlays/dev >"$RUN_DIR/rendered.yaml"
python3 - "$RUN_DIR/rendered.yaml" >"$RUN_DIR/shape.sh" <<'PY'
import shlex, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    kind, name = d.get("kind"), d["metadata"]["name"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        c = d["spec"]["template"]["spec"]["containers"][0]
        var = name.replace("finpay-", "").replace("-", "_")
        print(f"ARGS_{var}=({' '.join(shlex.quote(a) for a in c.get('args') or [])})")
        if kind != "Job":
            print(f"REPLICAS_{var}={d['spec']['replicas']}")
PY
# shellcheck source=/dev/null
. "$RUN_DIR/shape.sh"
say "shape from the manifests: fraud x$REPLICAS_fraud, wallet x$REPLICAS_wallet, notification x$REPLICAS_notification, payment x$REPLICAS_payment; seed: finpay ${ARGS_seed[*]}"

# The seed Job's args with this run's prefix in place of the deployment's.
SEED_ARGS=()
prev=
for a in "${ARGS_seed[@]}"; do
  if [ "$prev" = --schema-prefix ]; then SEED_ARGS+=("$PREFIX"); else SEED_ARGS+=("$a"); fi
  prev=$a
done

# --- secrets, as files --------------------------------------------------------------------------
ADMIN_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
umask 077
printf 'FINPAY_ADMIN_TOKEN=%s\n' "$ADMIN_TOKEN" >"$RUN_DIR/admin.env"

# A one-off container of the image, on the host network, as the pods run it.
oneoff() {
  docker run --rm --network host --read-only --user 10001:10001 --cap-drop ALL \
    --security-opt no-new-privileges "$@"
}

# --- the database URL: sslmode=require if this binary speaks TLS ----------------------------------
case "$DB_BASE" in *\?*) sep='&' ;; *) sep='?' ;; esac
DB_URL="$DB_BASE${sep}sslmode=require"
printf 'FINPAY_STORAGE__URL=%s\n' "$DB_URL" >"$RUN_DIR/storage.env"
SCHEMAS_CREATED=1
if oneoff --env-file "$RUN_DIR/storage.env" "$IMAGE" "${SEED_ARGS[@]}" >"$RUN_DIR/seed.out" 2>&1; then
  URL_MODE="sslmode=require"
else
  say "sslmode=require refused by this binary: $(tail -n 1 "$RUN_DIR/seed.out")"
  DB_URL=$DB_BASE
  URL_MODE="plain (sslmode=require refused)"
  printf 'FINPAY_STORAGE__URL=%s\n' "$DB_URL" >"$RUN_DIR/storage.env"
  oneoff --env-file "$RUN_DIR/storage.env" "$IMAGE" "${SEED_ARGS[@]}" >"$RUN_DIR/seed.out" 2>&1 \
    || { cat "$RUN_DIR/seed.out" >&2; die "seed failed"; }
fi
umask 022
say "database URL: $URL_MODE; $(cat "$RUN_DIR/seed.out")"
SEEDED=$(sed -n 's/^finpay seed: \([0-9]*\) .*/\1/p' "$RUN_DIR/seed.out")

# --- ports: free ones on 127.0.0.1, held together while picked so none repeats ----------------------
# payment.toml lists more fraud names than fraud has replicas (fraud-0 .. fraud-5, for its HPA): in
# the cluster the names without a pod do not resolve. Here they are ports nothing listens on, so
# payment's list has the same length and the same share of dead entries.
FRAUD_LISTED=$(python3 -c 'import sys, tomllib; print(len(tomllib.load(open(sys.argv[1], "rb"))["fraud"]["urls"]))' \
  deploy/k8s/base/config/payment.toml)
# Two ports per container (the service port and the admin listener's), the dead fraud names and
# payment's public port.
TOTAL=$((FRAUD_LISTED + 2 * (REPLICAS_fraud + REPLICAS_wallet + REPLICAS_notification + REPLICAS_payment) + 1))
read -r -a PORTS <<<"$(python3 - "$TOTAL" <<'PY'
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
)"
next_port=0
take_port() { PORT=${PORTS[$next_port]}; next_port=$((next_port + 1)); }
take_port; PUBLIC_PORT=$PORT

declare -A URLS
declare -A OWN_PORT
declare -A ADMIN_PORT
# start SERVICE INDEX [extra args...]: one replica, as its pod runs it.
start() {
  local svc=$1 i=$2
  shift 2
  local -n args="ARGS_$svc"
  local schema_env=() storage_env=()
  case $svc in
    wallet) schema_env=(-e "FINPAY_STORAGE__SCHEMA=${PREFIX}_wallet") ;;
    payment) schema_env=(-e "FINPAY_STORAGE__SCHEMA=${PREFIX}_payments") ;;
    notification) schema_env=(-e "FINPAY_STORAGE__SCHEMA=${PREFIX}_inbox") ;;
  esac
  [ "$svc" = fraud ] || storage_env=(--env-file "$RUN_DIR/storage.env")
  take_port
  OWN_PORT[$svc-$i]=$PORT
  local own=$PORT
  take_port
  ADMIN_PORT[$svc-$i]=$PORT
  PORT=$own
  local id
  id=$(docker run -d --name "finpay-$PREFIX-$svc-$i" --network host --read-only \
    --user 10001:10001 --cap-drop ALL --security-opt no-new-privileges --restart=always \
    --env-file "$RUN_DIR/admin.env" "${storage_env[@]}" "${schema_env[@]}" \
    -e FINPAY_HTTP__HOST=127.0.0.1 -e "FINPAY_HTTP__PORT=$PORT" \
    -e FINPAY_HTTP__ADMIN_HOST=127.0.0.1 -e "FINPAY_HTTP__ADMIN_PORT=${ADMIN_PORT[$svc-$i]}" \
    -v "$ROOT/deploy/k8s/base/config/$svc.toml:/etc/finpay/$svc.toml:ro" \
    "$IMAGE" "${args[@]}" "$@")
  CONTAINERS+=("$id")
  URLS[$svc]="${URLS[$svc]:-}${URLS[$svc]:+, }\"http://127.0.0.1:$PORT\""
}

wait_ready() {
  local name=$1 port=$2 deadline=$((SECONDS + 60))
  until curl -fsS -m 2 "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$name (port $port) not ready within 60 s"
    sleep 0.5
  done
}

for svc in fraud wallet notification; do
  n="REPLICAS_$svc"
  for i in $(seq 0 $((${!n} - 1))); do start "$svc" "$i"; done
done
for key in "${!OWN_PORT[@]}"; do wait_ready "$key" "${OWN_PORT[$key]}"; done
for i in $(seq "$REPLICAS_fraud" $((FRAUD_LISTED - 1))); do
  take_port
  URLS[fraud]="${URLS[fraud]}, \"http://127.0.0.1:$PORT\""
done
for i in $(seq 0 $((REPLICAS_payment - 1))); do
  start payment "$i" \
    --set "http.shared_port=$PUBLIC_PORT" \
    --set "fraud.urls=[${URLS[fraud]}]" \
    --set "wallet.urls=[${URLS[wallet]}]" \
    --set "notification.urls=[${URLS[notification]}]"
done
for i in $(seq 0 $((REPLICAS_payment - 1))); do wait_ready "payment-$i" "${OWN_PORT[payment-$i]}"; done
wait_ready "payment (public port)" "$PUBLIC_PORT"
say "${#CONTAINERS[@]} containers ready; payment's public port $PUBLIC_PORT; schemas ${PREFIX}_*; payment's fraud list: $FRAUD_LISTED, $REPLICAS_fraud of them running"

# The seed Job again: nothing changes.
again=$(oneoff --env-file "$RUN_DIR/storage.env" "$IMAGE" "${SEED_ARGS[@]}" 2>&1) || die "second seed failed: $again"
[ "$again" = "$(cat "$RUN_DIR/seed.out")" ] || die "second seed differs: $again"

# --- load, with a fraud container killed during it ---------------------------------------------
FRAUD0=$(docker inspect -f '{{.Id}}' "finpay-$PREFIX-fraud-0")
oneoff --cidfile "$RUN_DIR/load.cid" "$IMAGE" load --url "http://127.0.0.1:$PUBLIC_PORT" --requests "$REQUESTS" --json \
  >"$RUN_DIR/load.json" 2>"$RUN_DIR/load.err" &
LOAD_PID=$!
sleep 3
kill -0 "$LOAD_PID" 2>/dev/null || say "the load ended before the kill; the kill then costs nothing by construction"
kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$FRAUD0")"
say "SIGKILL to fraud-0's process during the load"
wait "$LOAD_PID" || { cat "$RUN_DIR/load.err" >&2; die "finpay load failed"; }

deadline=$((SECONDS + 60))
until [ "$(docker inspect -f '{{.RestartCount}}' "$FRAUD0")" -ge 1 ] \
  && [ "$(docker inspect -f '{{.State.Running}}' "$FRAUD0")" = true ]; do
  [ $SECONDS -lt $deadline ] || die "fraud-0 was not restarted within 60 s"
  sleep 0.5
done
wait_ready fraud-0 "${OWN_PORT[fraud-0]}"
RESTARTS=0
for id in "${CONTAINERS[@]}"; do
  RESTARTS=$((RESTARTS + $(docker inspect -f '{{.RestartCount}}' "$id")))
done

# Docker's HEALTHCHECK of the image: every container healthy within its start period and a few
# intervals.
deadline=$((SECONDS + 60))
while :; do
  HEALTHY=0
  for id in "${CONTAINERS[@]}"; do
    [ "$(docker inspect -f '{{.State.Health.Status}}' "$id")" = healthy ] && HEALTHY=$((HEALTHY + 1))
  done
  [ "$HEALTHY" -eq ${#CONTAINERS[@]} ] || [ $SECONDS -ge $deadline ] && break
  sleep 1
done

# --- the money audit -------------------------------------------------------------------------
if oneoff --env-file "$RUN_DIR/storage.env" "$IMAGE" \
  check --database-url "$DB_URL" --schema-prefix "$PREFIX" --json >"$RUN_DIR/check.out" 2>&1; then
  CHECK=ok
elif grep -q "not built yet" "$RUN_DIR/check.out"; then
  CHECK=unavailable
  say "check unavailable: $(tail -n 1 "$RUN_DIR/check.out")"
else
  CHECK=failed
  cat "$RUN_DIR/check.out" >&2
fi
# Until the audit runs on PostgreSQL, a stand-in read straight from the wallet's tables (it knows
# their columns, so it reports "unknown" rather than fail if they change): no money was made or
# lost, and the merchant holds exactly what the load says succeeded.
MONEY=unknown
money=$(psql -qAt "$DB_BASE" -c "select sum(balance) = sum(opening_balance),
    (select balance from ${PREFIX}_wallet.accounts where id = 'merchant-0')
  from ${PREFIX}_wallet.accounts" 2>/dev/null) || money=
if [ -n "$money" ]; then
  paid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["succeeded_amount_minor"])' "$RUN_DIR/load.json")
  if [ "$money" = "t|$paid" ]; then MONEY=conserved; else MONEY="NOT conserved ($money, paid $paid)"; fi
fi

python3 - "$RUN_DIR/load.json" <<PY
import json, sys
load = json.load(open(sys.argv[1]))
print(json.dumps({
    "image": "$IMAGE",
    "containers": ${#CONTAINERS[@]},
    "database_url": "$URL_MODE",
    "seeded_accounts": int("${SEEDED:-0}"),
    "requests": load["requests"],
    "succeeded": load["succeeded"],
    "success_rate": load["success_rate"],
    "errors": load["errors"],
    "p99_ms": load["latency_ms"].get("p99"),
    "load_s": load["elapsed_s"],
    "fraud_listed": $FRAUD_LISTED,
    "fraud_running": $REPLICAS_fraud,
    "killed": "fraud-0",
    "restarts_seen": $RESTARTS,
    "healthy": "$HEALTHY/${#CONTAINERS[@]}",
    "check": "$CHECK",
    "check_ok": {"ok": True, "failed": False}.get("$CHECK"),
    "money_stand_in": "$MONEY",
    "elapsed_s": $((SECONDS - START)),
}))
PY
RATE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["success_rate"])' "$RUN_DIR/load.json")
[ "$RATE" = 1.0 ] || die "success rate $RATE, not 1.0"
[ "$RESTARTS" -ge 1 ] || die "no restart seen"
[ "$HEALTHY" -eq ${#CONTAINERS[@]} ] || die "only $HEALTHY of ${#CONTAINERS[@]} containers healthy"
[ "$CHECK" != failed ] || die "finpay check failed"
case $MONEY in NOT*) die "money $MONEY" ;; esac
