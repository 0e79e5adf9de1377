#!/usr/bin/env bash
# The local stack's daemons, on a fresh Debian machine as root. Every step returns at once when its part
# already answers, so `up` is cheap to call before every demo and test run.
#
#   scripts/local-stack.sh up          packages + docker + registry + azurite + mlflow + base-image
#   scripts/local-stack.sh packages    Debian packages the stack needs (docker.io, docker-registry, ...)
#   scripts/local-stack.sh docker      a Docker engine on /var/run/docker.sock
#   scripts/local-stack.sh registry    the distribution registry on 127.0.0.1:5000, deletes enabled
#   scripts/local-stack.sh mariadb     the database that holds Azurite's blob metadata, on 127.0.0.1:3307
#   scripts/local-stack.sh azurite     Azure Storage's emulator: blob 127.0.0.1:10000, queue :10001, table :10002
#   scripts/local-stack.sh mlflow      an MLflow tracking server and model registry on 127.0.0.1:5050 (SQLite, artifacts
#                                      served by the server itself), in a venv of its own
#   scripts/local-stack.sh down        stop Azurite, MariaDB, the registry and the engine that this script started
#   scripts/local-stack.sh stop PART.. stop some of them (azurite, mariadb, registry, docker): `shipbot up` undoes a
#                                      start that failed halfway with it
#
# Environment: SHIPBOT_STATE (default /var/lib/shipbot) holds the registry's storage, Azurite's npm prefix
# (node/) and data (azurite/), configs and logs;
# SHIPBOT_REGISTRY_ADDR (default 127.0.0.1:5000); SHIPBOT_REGISTRY_NOTIFY_URL, when set, receives the
# registry's push notifications (the event bridge's ImagePushed source).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
state=${SHIPBOT_STATE:-/var/lib/shipbot}
registry_addr=${SHIPBOT_REGISTRY_ADDR:-127.0.0.1:5000}
notify_url=${SHIPBOT_REGISTRY_NOTIFY_URL-http://127.0.0.1:7071/runtime/bridge/registry}  # set it empty for none
# The registry proves itself to the host's event bridge with this secret (Authorization: Bearer ...): the host
# reads the same file (stack/host.py), or both take SHIPBOT_REGISTRY_NOTIFY_SECRET.
notify_secret=${SHIPBOT_REGISTRY_NOTIFY_SECRET:-}
notify_secret_file=$state/registry-notify.secret
azurite_version=3.35.0  # the newest whose package declares Node 18 (Debian 12) and 20 support
# Azurite's blob endpoint for its well-known development account.
azurite_blob=http://127.0.0.1:10000/devstoreaccount1
# Azurite keeps blob metadata in memory and saves it every few seconds (LokiJS): a killed Azurite loses
# writes it had acknowledged. With AZURITE_DB it keeps blob metadata in MariaDB instead, committed before it
# answers, so the ledger and the models survive a crash of Azurite as they survive one of Azure Storage.
mariadb_port=${SHIPBOT_MARIADB_PORT:-3307}
mariadb_dir=$state/mariadb
# MLflow: the model registry Azure ML workspaces serve the API of. Its own venv (about 850 MB, not the app's:
# the function app speaks MLflow's REST API with httpx and never imports mlflow).
mlflow_version=3.17.0  # 3.18 needs an mlflow-tracing release PyPI does not have
mlflow_addr=${SHIPBOT_MLFLOW_ADDR:-127.0.0.1:5050}
mlflow_dir=$state/mlflow
log() { printf '[local-stack] %s\n' "$*" >&2; }

# Poll until "$@" succeeds, for at most $1 seconds: start-up has no event to wait on but the answer itself.
wait_for() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  command -v git >/dev/null || missing+=(git)
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

docker_engine() {
  docker info >/dev/null 2>&1 && return 0
  mkdir -p "$state/log"
  log "starting dockerd"
  setsid dockerd >"$state/log/dockerd.log" 2>&1 </dev/null &
  echo $! >"$state/dockerd.pid"
  wait_for 60 docker info || { tail -20 "$state/log/dockerd.log" >&2; log "dockerd did not come up"; exit 1; }
}

registry_config() {
  cat <<YAML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $state/registry/data
  delete:
    enabled: true
http:
  addr: $registry_addr
  relativeurls: true
YAML
  [[ -z $notify_url ]] && return 0
  if [[ -z $notify_secret ]]; then
    if [[ ! -s $notify_secret_file ]]; then  # first writer wins (noclobber), the host creates it the same way
      (umask 077; set -o noclobber; head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$notify_secret_file") 2>/dev/null || true
    fi
    notify_secret=$(<"$notify_secret_file")
  fi
  cat <<YAML
notifications:
  events:
    includereferences: true
  endpoints:
    - name: shipbot
      url: $notify_url
      headers:
        Authorization: [Bearer $notify_secret]
      timeout: 2s
      threshold: 5
      backoff: 1s
      ignoredmediatypes: [application/octet-stream]
YAML
}

registry() {
  mkdir -p "$state/registry/data" "$state/log"
  local config=$state/registry/config.yml
  (umask 077; registry_config >"$config.new")  # it holds the notification secret
  if curl -sf "http://$registry_addr/v2/" >/dev/null; then
    if cmp -s "$config" "$config.new"; then rm "$config.new"; return 0; fi
    log "registry config changed: restarting it"
    stop_pid "$state/registry.pid"
  fi
  mv "$config.new" "$config"
  log "starting the registry on $registry_addr"
  setsid docker-registry serve "$config" >>"$state/log/registry.log" 2>&1 </dev/null &
  echo $! >"$state/registry.pid"
  wait_for 20 curl -sf "http://$registry_addr/v2/" || { tail -20 "$state/log/registry.log" >&2; exit 1; }
}

# Azurite from npm into a prefix of our own (not global), so its version is ours and nothing else moves.
azurite_install() {
  local prefix=$state/node
  [[ -x $prefix/bin/azurite ]] && grep -qx "$azurite_version" "$prefix/.azurite-version" 2>/dev/null && return 0
  if ! command -v npm >/dev/null; then
    log "installing nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  log "installing azurite@$azurite_version into $prefix"
  mkdir -p "$prefix"
  npm install --global --prefix "$prefix" --no-audit --no-fund --loglevel=error "azurite@$azurite_version" >&2
  echo "$azurite_version" >"$prefix/.azurite-version"
}

# --no-defaults first: Debian's /etc/mysql config (the system service's socket, pid file...) is not ours.
mariadb_answers() { mariadb-admin --no-defaults --socket="$mariadb_dir/mariadb.sock" --user=root ping >/dev/null 2>&1; }

# A MariaDB of our own (own data directory, port and socket; never the system's service) with one database
# for Azurite, its user's password made once (mode 0600) in $state/mariadb.secret.
mariadb() {
  command -v mariadbd >/dev/null || packages
  mariadb_answers && return 0
  mkdir -p "$mariadb_dir" "$state/log"
  if [[ ! -s $state/mariadb.secret ]]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$state/mariadb.secret")
  fi
  if [[ ! -d $mariadb_dir/data/mysql ]]; then
    log "creating the MariaDB data directory"
    mariadb-install-db --no-defaults --datadir="$mariadb_dir/data" --user=root --auth-root-authentication-method=socket \
      --skip-test-db >>"$state/log/mariadb.log" 2>&1 || { tail -20 "$state/log/mariadb.log" >&2; exit 1; }
  fi
  (umask 077; cat >"$mariadb_dir/init.sql" <<SQL
CREATE DATABASE IF NOT EXISTS azurite CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;
CREATE USER IF NOT EXISTS 'azurite'@'127.0.0.1' IDENTIFIED BY '$(<"$state/mariadb.secret")';
ALTER USER 'azurite'@'127.0.0.1' IDENTIFIED BY '$(<"$state/mariadb.secret")';
GRANT ALL ON azurite.* TO 'azurite'@'127.0.0.1';
SQL
  )
  log "starting mariadb on 127.0.0.1:$mariadb_port"
  setsid mariadbd --no-defaults --datadir="$mariadb_dir/data" --user=root --bind-address=127.0.0.1 --port="$mariadb_port" \
    --socket="$mariadb_dir/mariadb.sock" --pid-file="$mariadb_dir/mariadbd.pid" --init-file="$mariadb_dir/init.sql" \
    --skip-log-bin --transaction-isolation=SERIALIZABLE --innodb-lock-wait-timeout=2 --log-error="$state/log/mariadb.log" </dev/null >>"$state/log/mariadb.log" 2>&1 &
  echo $! >"$state/mariadb.pid"
  wait_for 60 mariadb_answers || { tail -20 "$state/log/mariadb.log" >&2; log "mariadb did not come up"; exit 1; }
}

# Any HTTP answer from the blob endpoint (Azurite replies 400/403 to a bare GET) means it is up.
azurite_answers() { curl -s -o /dev/null -m 2 "$azurite_blob?comp=list"; }

azurite() {
  mariadb  # first: an Azurite that answers over a dead MariaDB answers 500 to every blob call
  azurite_answers && return 0
  azurite_install
  mkdir -p "$state/azurite" "$state/log"
  log "starting azurite on 127.0.0.1:10000-10002"
  # --skipApiVersionCheck: the Python SDK may speak a newer storage API version than this Azurite knows.
  # --disableTelemetry: it would otherwise post usage data to Application Insights (no network here anyway).
  AZURITE_DB="mysql://azurite:$(<"$state/mariadb.secret")@127.0.0.1:$mariadb_port/azurite" \
  setsid "$state/node/bin/azurite" --skipApiVersionCheck --disableTelemetry --location "$state/azurite" \
    --blobHost 127.0.0.1 --queueHost 127.0.0.1 --tableHost 127.0.0.1 >>"$state/log/azurite.log" 2>&1 </dev/null &
  echo $! >"$state/azurite.pid"
  wait_for 60 azurite_answers || { tail -20 "$state/log/azurite.log" >&2; log "azurite did not come up"; exit 1; }
}

mlflow_answers() { curl -sf -m 2 "http://$mlflow_addr/health" >/dev/null; }

mlflow_install() {
  local venv=$mlflow_dir/venv
  [[ -x $venv/bin/mlflow ]] && grep -qx "$mlflow_version" "$mlflow_dir/.version" 2>/dev/null && return 0
  log "installing mlflow==$mlflow_version into $venv (a few minutes, once)"
  mkdir -p "$mlflow_dir"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "mlflow==$mlflow_version" >&2
  echo "$mlflow_version" >"$mlflow_dir/.version"
}

mlflow() {
  mlflow_answers && return 0
  mlflow_install
  mkdir -p "$mlflow_dir/artifacts" "$state/log"
  log "starting mlflow on $mlflow_addr"
  # --serve-artifacts: clients read and write artifacts through the server (mlflow-artifacts: URIs), as they
  # do an Azure ML workspace's; one worker is plenty for a registry that a bot polls.
  (cd "$mlflow_dir" && setsid "$mlflow_dir/venv/bin/mlflow" server --host "${mlflow_addr%:*}" --port "${mlflow_addr##*:}" \
    --backend-store-uri "sqlite:///$mlflow_dir/mlflow.db" --serve-artifacts --artifacts-destination "$mlflow_dir/artifacts" \
    --workers 1 >>"$state/log/mlflow.log" 2>&1 </dev/null &
   echo $! >"$state/mlflow.pid")
  wait_for 180 mlflow_answers || { tail -20 "$state/log/mlflow.log" >&2; log "mlflow did not come up"; exit 1; }
}

stop_pid() {
  [[ -f $1 ]] || return 0
  local pid; pid=$(cat "$1")
  if kill "$pid" 2>/dev/null; then wait_for 20 bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$1"
}

case ${1:-up} in
  packages) packages ;;
  docker) docker_engine ;;
  registry) registry ;;
  base-image) "$here/base-image.sh" ;;
  mariadb) mariadb ;;
  azurite) azurite ;;
  mlflow) mlflow ;;
  up) packages; docker_engine; registry; azurite; mlflow; "$here/base-image.sh" ;;
  down) stop_pid "$state/mlflow.pid"; stop_pid "$state/azurite.pid"; stop_pid "$state/mariadb.pid"
        stop_pid "$state/registry.pid"; stop_pid "$state/dockerd.pid" ;;
  stop)
    shift
    for part in "$@"; do
      case $part in
        azurite|mariadb|registry|mlflow) stop_pid "$state/$part.pid" ;;
        docker) stop_pid "$state/dockerd.pid" ;;
        *) echo "stop: no part named $part (azurite, mariadb, registry, mlflow, docker)" >&2; exit 2 ;;
      esac
    done ;;
  *) echo "usage: $0 [up|packages|docker|registry|mariadb|azurite|mlflow|base-image|down|stop PART...]" >&2; exit 2 ;;
esac
