#!/usr/bin/env bash
# fleetgram end to end on a throwaway kind cluster: build both images, load them into kind,
# install the Helm chart from a values file (with a throwaway PostgreSQL), queue a BotTask with
# kubectl and wait until the API server has accepted it (it exists with the spec sent; with fake
# tokens no worker can run it, so its .status.phase never comes). With WAIT_PHASE it also waits
# for that phase (real bots and key). For people with Docker, kind, kubectl and helm; CI cannot run it (no Docker
# engine there): CI uses the emulated API server instead (docs/kubernetes.md).
#
# Usage:
#   deploy/kind-e2e.sh            # fake tokens: checks install, CRDs, WorkerPool, queueing
#   deploy/kind-e2e.sh --keep     # keep the cluster afterwards (delete: kind delete cluster --name fleetgram-e2e)
#
# With real bots and a real key the task runs to Completed (WAIT_PHASE makes the script wait):
#   MASTER_BOT_TOKEN=... WORKER_TOKENS=tok1,tok2 ALLOWED_USER_ID=12345 ANTHROPIC_API_KEY=sk-ant-... \
#     WAIT_PHASE=Completed deploy/kind-e2e.sh
#
# Everything can be faked: TELEGRAM_API_URL and ANTHROPIC_BASE_URL point the bots at your own
# Bot API / Messages API stand-ins (reachable from the cluster).
#
# Settings (environment):
#   CLUSTER            kind cluster name                          (fleetgram-e2e)
#   NAMESPACE          namespace to install into                  (fleetgram)
#   RELEASE            Helm release name                          (fleetgram)
#   IMAGE_TAG          tag of the images built here               (e2e)
#   MASTER_BOT_TOKEN   the master bot's token                     (a fake one)
#   WORKER_TOKENS      comma-separated worker bot tokens          (two fake ones)
#   ALLOWED_USER_ID    the Telegram user id served                (1234567890: ten digits)
#   ANTHROPIC_API_KEY  the Anthropic key                          (a fake one)
#   TELEGRAM_API_URL   Bot API base URL                           (https://api.telegram.org)
#   ANTHROPIC_BASE_URL Messages API base URL                      (empty: Anthropic's)
#   WAIT_PHASE         also wait for this BotTask phase, |-separated (empty: only acceptance)
#   TIMEOUT            seconds to wait for each step               (300)
set -euo pipefail

KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1
FAKE=0
[[ -z "${MASTER_BOT_TOKEN:-}" ]] && FAKE=1   # fake bots cannot reach Telegram: do not wait for them
CLUSTER=${CLUSTER:-fleetgram-e2e}
NAMESPACE=${NAMESPACE:-fleetgram}
RELEASE=${RELEASE:-fleetgram}
IMAGE_TAG=${IMAGE_TAG:-e2e}
MASTER_BOT_TOKEN=${MASTER_BOT_TOKEN:-100000001:fake-master-token}
WORKER_TOKENS=${WORKER_TOKENS:-100000002:fake-worker-one,100000003:fake-worker-two}
ALLOWED_USER_ID=${ALLOWED_USER_ID:-1234567890}
ANTHROPIC_API_KEY=${ANTHROPIC_API_KEY:-sk-ant-fake}
TELEGRAM_API_URL=${TELEGRAM_API_URL:-https://api.telegram.org}
ANTHROPIC_BASE_URL=${ANTHROPIC_BASE_URL:-}
WAIT_PHASE=${WAIT_PHASE:-}
TIMEOUT=${TIMEOUT:-300}

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
log() { printf '\n==> %s\n' "$*"; }

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

cleanup() {
  if [[ $KEEP -eq 0 ]]; then
    log "deleting kind cluster $CLUSTER (use --keep to keep it)"
    kind delete cluster --name "$CLUSTER" || true
  fi
}
trap cleanup EXIT

log "kind cluster $CLUSTER"
if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER"

log "building images fleetgram-master:$IMAGE_TAG and fleetgram-worker:$IMAGE_TAG"
docker build -f Dockerfile.master -t "fleetgram-master:$IMAGE_TAG" .
docker build -f Dockerfile.worker -t "fleetgram-worker:$IMAGE_TAG" .
kind load docker-image --name "$CLUSTER" "fleetgram-master:$IMAGE_TAG" "fleetgram-worker:$IMAGE_TAG"

log "namespace $NAMESPACE and a throwaway PostgreSQL"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres, labels: {app: postgres}}
spec:
  replicas: 1
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      containers:
        - name: postgres
          image: postgres:16-alpine
          env:
            - {name: POSTGRES_USER, value: fleetgram}
            - {name: POSTGRES_PASSWORD, value: fleetgram}
            - {name: POSTGRES_DB, value: fleetgram}
          ports: [{containerPort: 5432}]
          readinessProbe:
            exec: {command: [pg_isready, -U, fleetgram]}
            periodSeconds: 3
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec:
  selector: {app: postgres}
  ports: [{port: 5432, targetPort: 5432}]
YAML
kubectl -n "$NAMESPACE" rollout status deploy/postgres --timeout="${TIMEOUT}s"

log "helm install $RELEASE (from a values file, as a platform engineer would)"
values="$(mktemp -t fleetgram-values.XXXXXX.yaml)"
trap 'rm -f "$values"; cleanup' EXIT
yaml_str() { printf "'%s'" "${1//\'/\'\'}"; }   # a single-quoted YAML string
{
  echo "image:"
  echo "  master: {repository: fleetgram-master, tag: $(yaml_str "$IMAGE_TAG")}"
  echo "  worker: {repository: fleetgram-worker, tag: $(yaml_str "$IMAGE_TAG")}"
  echo "  pullPolicy: Never"
  echo "telegram:"
  echo "  apiUrl: $(yaml_str "$TELEGRAM_API_URL")"
  echo "  allowedUserIds: [$ALLOWED_USER_ID]"
  echo "  masterToken: {value: $(yaml_str "$MASTER_BOT_TOKEN")}"
  echo "anthropic:"
  echo "  apiKey: {value: $(yaml_str "$ANTHROPIC_API_KEY")}"
  echo "  baseUrl: $(yaml_str "$ANTHROPIC_BASE_URL")"
  echo "database:"
  echo "  url: {value: 'postgresql://fleetgram:fleetgram@postgres:5432/fleetgram'}"
  echo "workerTokens:"
  IFS=',' read -r -a tokens <<< "$WORKER_TOKENS"
  for token in "${tokens[@]}"; do echo "  - {value: $(yaml_str "$token")}"; done
  echo "scaling: {maxWorkers: ${#tokens[@]}}"
} > "$values"
IFS=',' read -r -a tokens <<< "$WORKER_TOKENS"
helm upgrade --install "$RELEASE" charts/fleetgram --namespace "$NAMESPACE" -f "$values"
kubectl -n "$NAMESPACE" rollout status deploy -l app.kubernetes.io/component=operator \
  --timeout="${TIMEOUT}s"
if [[ $FAKE -eq 0 ]]; then
  kubectl -n "$NAMESPACE" rollout status deploy -l app.kubernetes.io/component=master \
    --timeout="${TIMEOUT}s"
fi

log "CRDs and the WorkerPool"
kubectl get crd bottasks.fleetgram.dev workerpools.fleetgram.dev
kubectl wait --for=condition=Established crd/bottasks.fleetgram.dev crd/workerpools.fleetgram.dev --timeout=60s
kubectl -n "$NAMESPACE" get wp

log "queueing a BotTask"
name="t-e2e$(date +%s | tail -c 5)"
sed -e "s/name: t-7k2qf/name: $name/" \
    -e "s/userId: 123456789/userId: $ALLOWED_USER_ID/" \
    -e "s/chatId: 123456789/chatId: $ALLOWED_USER_ID/" \
    crds/examples/bottask.yaml | kubectl -n "$NAMESPACE" apply -f -
# The API server refuses a bad task (the CRD schema): priority 11 must not be accepted.
if sed -e "s/name: t-7k2qf/name: $name-bad/" -e 's/priority: 3/priority: 11/' \
     crds/examples/bottask.yaml | kubectl -n "$NAMESPACE" apply -f - 2>/dev/null; then
  echo "FAIL: a BotTask with priority 11 was accepted" >&2; exit 1
fi
kubectl -n "$NAMESPACE" get bottasks

# Accepted: the BotTask is stored with the spec sent (userId and chatId, ten digits, intact).
# That needs no worker, so it holds with fake tokens too.
wait_for_acceptance() {
  local deadline=$((SECONDS + TIMEOUT)) got=""
  while (( SECONDS < deadline )); do
    got=$(kubectl -n "$NAMESPACE" get bottask "$1" \
            -o jsonpath='{.metadata.uid} {.spec.userId} {.spec.chatId}' 2>/dev/null || true)
    if [[ "$got" =~ ^[0-9a-f-]+\ $ALLOWED_USER_ID\ $ALLOWED_USER_ID$ ]]; then return 0; fi
    sleep 2
  done
  echo "FAIL: $1 was not accepted as sent (got '${got:-<nothing>}')" >&2
  return 1
}

# With real bots and key: the phase the task must reach (WAIT_PHASE, e.g. Completed).
wait_for_phase() {
  local deadline=$((SECONDS + TIMEOUT)) phase=""
  while (( SECONDS < deadline )); do
    phase=$(kubectl -n "$NAMESPACE" get bottask "$1" -o jsonpath='{.status.phase}' 2>/dev/null || true)
    if [[ -n "$phase" && "|$WAIT_PHASE|" == *"|$phase|"* ]]; then
      log "OK: $1 reached phase $phase"; return 0
    fi
    sleep 3
  done
  echo "FAIL: $1 is in phase '${phase:-<none>}', wanted $WAIT_PHASE" >&2
  return 1
}

log "waiting up to ${TIMEOUT}s for $name to be accepted"
status=0
wait_for_acceptance "$name" || status=1
if [[ $status -eq 0 && -n "$WAIT_PHASE" ]]; then
  log "waiting up to ${TIMEOUT}s for $name to reach phase $WAIT_PHASE"
  wait_for_phase "$name" || status=1
fi
kubectl -n "$NAMESPACE" get bottasks -o wide
kubectl -n "$NAMESPACE" get wp
kubectl -n "$NAMESPACE" get deployments
if [[ $status -ne 0 ]]; then
  kubectl -n "$NAMESPACE" logs -l app.kubernetes.io/component=operator --tail=100 || true
  exit 1
fi
log "OK: $name was accepted"
