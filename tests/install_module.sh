#!/usr/bin/env bash
# What the README promises a module author: install aio to any prefix,
# build a module with `pkg-config --cflags --libs aio` and nothing else, put
# it in the prefix's moduledir, and have the installed aio find it there
# (no module_path) and serve it. Nothing may be installed outside the
# prefix.
#   tests/install_module.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
prefix=$(mktemp -d /tmp/aio-install-XXXXXX)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >"$prefix/install.log"
outside=$(grep -E '^-- (Installing|Up-to-date): ' "$prefix/install.log" |
  sed -E 's/^-- [A-Za-z-]+: //' | grep -v "^$prefix/" || true)
if [ -n "$outside" ]; then
  echo "installed outside the prefix $prefix:"; echo "$outside"; exit 1
fi
pc=$(dirname "$(find "$prefix" -name aio.pc | head -1)")
flags=$(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs aio)
moduledir=$(PKG_CONFIG_PATH=$pc pkg-config --variable=moduledir aio)
echo "pkg-config --cflags --libs aio: $flags"
echo "moduledir: $moduledir"
case $(realpath "$moduledir") in
"$(realpath "$prefix")"/*) ;;
*) echo "moduledir $moduledir is not under the prefix $prefix"; exit 1 ;;
esac
[ -d "$moduledir" ] || { echo "moduledir $moduledir was not installed"; exit 1; }
# shellcheck disable=SC2086 # the flags are words
cc -std=c11 -Wall -Wextra -pedantic -Werror -fPIC -shared \
  -o "$moduledir/addition.so" "$src/examples/addition/addition.c" $flags
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$prefix/aio.conf" <<CONF
[aio]
modules = addition
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
