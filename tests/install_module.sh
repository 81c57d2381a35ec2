#!/usr/bin/env bash
# What the README promises a module author: install aio, build a module
# with `pkg-config --cflags aio` and nothing else, and have the installed
# aio load and serve it.
#   tests/install_module.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
prefix=$(mktemp -d /tmp/aio-install-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
pc=$(dirname "$(find "$prefix" -name aio.pc | head -1)")
cflags=$(PKG_CONFIG_PATH=$pc pkg-config --cflags aio)
echo "pkg-config --cflags aio: $cflags"
cc -std=c11 -Wall -Wextra -pedantic -Werror -fPIC -shared $cflags \
  -o "$prefix/addition.so" "$src/examples/addition/addition.c"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$prefix/aio.conf" <<CONF
[aio]
modules = addition
module_path = .
workers = 1
control = aio.sock

[server:addition]
protocol = addition.protocol
address = 127.0.0.1
port = $port
CONF
"$prefix/bin/aio" -c "$prefix/aio.conf" check
exec 9>"$prefix/ready"
"$prefix/bin/aio" -c "$prefix/aio.conf" run --ready-fd 9 2>"$prefix/log" &
pid=$!
exec 9>&-
for _ in $(seq 200); do [ -s "$prefix/ready" ] && break; sleep 0.025; done
answer=$(python3 - "$port" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"2 + 2 + 3\n")
print(s.recv(64).decode().strip())
PY
)
kill -TERM "$pid"
wait "$pid"
echo "answer: $answer"
[ "$answer" = 7 ]
