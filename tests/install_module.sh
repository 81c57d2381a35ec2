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
# The same for a module in C++ (aio.h's macros have a C++ branch).
# shellcheck disable=SC2086
c++ -std=c++17 -Wall -Wextra -Werror -fPIC -shared \
  -o "$moduledir/cxxmod.so" "$src/tests/modules/cxxmod.cc" $flags
ports=$(python3 -c '
import socket
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
print(a.getsockname()[1], b.getsockname()[1])')
read -r port cxxport <<<"$ports"
cat >"$prefix/aio.conf" <<CONF
[aio]
modules = addition cxxmod
workers = 1
control = aio.sock

[aio:commands]
shout = cxxmod.shout

[server:addition]
protocol = addition.protocol
address = 127.0.0.1
port = $port

[server:upper]
protocol = cxxmod.upper_proto
address = 127.0.0.1
port = $cxxport

[server:raw]
factory = cxxmod.raw_server
path = raw.sock

[schedule:tick]
every = 3600
func = cxxmod.tick

[listen:cxx]
seen = cxxmod.on_seen
CONF
"$prefix/bin/aio" -c "$prefix/aio.conf" check
exec 9>"$prefix/ready"
"$prefix/bin/aio" -c "$prefix/aio.conf" run --ready-fd 9 2>"$prefix/log" &
pid=$!
exec 9>&-
for _ in $(seq 200); do [ -s "$prefix/ready" ] && break; sleep 0.025; done
ask() { # PORT LINE: the first answer to LINE
  python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(sys.argv[2].encode() + b"\n")
print(s.recv(64).decode().strip())
PY
}
answer=$(ask "$port" "2 + 2 + 3")
cxx_answer=$(ask "$cxxport" "from c++")
kill -TERM "$pid"
wait "$pid"
shout_status=0
shout=$("$prefix/bin/aio" -c "$prefix/aio.conf" shout loud) || shout_status=$?
echo "answer: $answer; C++ module: '$cxx_answer'; aio shout: '$shout' (exit $shout_status)"
[ "$answer" = 7 ] && [ "$cxx_answer" = "FROM C++" ] && [ "$shout" = LOUD ] &&
  [ "$shout_status" = 3 ]
