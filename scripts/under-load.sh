# scripts/under-load.sh - sourced by scripts/reload-under-load and
# scripts/upgrade-under-load: wrk on loopback against aio and nginx while
# something is done to them COUNT times, and the failures counted.
#
# The sourcing script sets COUNT, WORKERS, GAP, CONNS and calls, in order:
#   under_load_setup NAME        (a work dir, the build, the cleanup trap)
#   aio_start                    (aio.hello on $aport, $work/aio.conf)
#   run_case NAME PORT CMD...    (per load shape, CMD run COUNT times)
#   nginx_start                  (`return 200` on $nport, reuseport)
# Loopback only; every run is bounded (wrk -d) and everything it starts is
# stopped on exit.

DUR=$(awk -v r="$COUNT" -v g="$GAP" 'BEGIN { printf "%d", r * g + 4 }')

under_load_setup() {
  scripts/setup wrk nginx-light python3 >/dev/null
  AIO_BUILD_DIR=${AIO_BUILD_DIR:-build} scripts/build >/dev/null
  AIO=$PWD/${AIO_BUILD_DIR:-build}/aio
  work=$(mktemp -d "/tmp/aio-$1-XXXXXX")
  pids=()
  trap under_load_cleanup EXIT
}

under_load_cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for f in "$work"/nginx.pid "$work"/nginx.pid.oldbin; do
    if [ -f "$f" ]; then kill -QUIT "$(cat "$f")" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wrk's summary -> "requests failed_connections failed_requests"
parse_wrk() {
  awk '
    /requests in/ { req = $1 }
    /Socket errors/ {
      for (i = 1; i <= NF; i++) {
        gsub(",", "", $(i+1));
        if ($i == "connect") c += $(i+1);
        if ($i == "read") r += $(i+1);
        if ($i == "write") w += $(i+1);
        if ($i == "timeout") t += $(i+1);
      }
    }
    /Non-2xx/ { n += $NF }
    END { printf "%d %d %d\n", req, c + t, r + w + n }' "$1"
}

# run_case NAME PORT CMD... -> prints a result line per client mode
run_case() {
  local name=$1 port=$2; shift 2
  local mode out
  for mode in keepalive close; do
    out="$work/wrk-$name-$mode.txt"
    if [ "$mode" = close ]; then
      wrk -t2 -c"$CONNS" -d"${DUR}s" -H "Connection: close" "http://127.0.0.1:$port/" >"$out" 2>&1 &
    else
      wrk -t2 -c"$CONNS" -d"${DUR}s" "http://127.0.0.1:$port/" >"$out" 2>&1 &
    fi
    local wrk_pid=$!
    sleep 1
    local ok=0 i
    for ((i = 0; i < COUNT; i++)); do
      if "$@" >>"$work/cmd-$name.log" 2>&1; then ok=$((ok + 1)); fi
      sleep "$GAP"
    done
    wait "$wrk_pid"
    read -r req fc fr < <(parse_wrk "$out")
    printf "%-6s %-10s %s %2d/%-2d  requests %8d  failed connections %d  failed requests %d\n" \
      "$name" "$mode" "$WHAT" "$ok" "$COUNT" "$req" "$fc" "$fr"
  done
}

aio_start() {
  aport=$(free_port)
  cat >"$work/aio.conf" <<CONF
[aio]
workers = $WORKERS
graceful_timeout = 10
control = $work/aio.sock
log_file = $work/aio.log

[server:hello]
protocol = aio.hello
address = 127.0.0.1
port = $aport
CONF
  exec 9>"$work/ready"
  "$AIO" -c "$work/aio.conf" run --ready-fd 9 &
  aio_pid=$!
  pids+=("$aio_pid")
  exec 9>&-
  for _ in $(seq 100); do [ -s "$work/ready" ] && break; sleep 0.05; done
  [ -s "$work/ready" ] || { echo "aio did not start"; cat "$work/aio.log"; exit 1; }
}

nginx_start() {
  nport=$(free_port)
  mkdir -p "$work/nginx"
  cat >"$work/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$nport reuseport;
    location / { return 200 "Hello, World!\n"; }
  }
}
CONF
  # By its full path: USR2 re-executes argv[0], which is not looked up.
  NGINX=$(command -v nginx)
  "$NGINX" -c "$work/nginx.conf" -p "$work/nginx"
}
