#!/usr/bin/env bash
# Every ```c block of README.md and docs/*.md is a module's source (with
# <aio.h> included for it when it does not include it): each must compile
# as C11 with every warning, so the docs cannot drift from aio.h.
#   tests/doc_snippets.sh SOURCE_DIR JANSSON_INCLUDEDIR
set -euo pipefail
src=$1 jansson=$2
work=$(mktemp -d /tmp/aio-snippets-XXXXXX)
trap 'rm -rf "$work"' EXIT
n=0 failed=0
for doc in "$src"/README.md "$src"/docs/*.md; do
  python3 - "$doc" "$work" <<'PY'
import os, re, sys
doc, work = sys.argv[1], sys.argv[2]
text = open(doc).read()
for i, m in enumerate(re.finditer(r"^```c\n(.*?)^```", text, re.M | re.S)):
    line = text.count("\n", 0, m.start()) + 2
    body = m.group(1)
    if "#include <aio.h>" not in body:
        body = "#include <aio.h>\n" + body
    name = "%s--%d.c" % (os.path.basename(doc), line)
    open(os.path.join(work, name), "w").write("#line 1 \"%s:%d\"\n" % (doc, line) + body)
PY
done
for f in "$work"/*.c; do
  [ -e "$f" ] || continue
  n=$((n + 1))
  if ! cc -std=c11 -Wall -Wextra -pedantic -Werror -fsyntax-only \
    -I"$src/include" -I"$jansson" "$f"; then
    failed=$((failed + 1))
  fi
done
echo "$((n - failed)) passed, $failed failed"
[ "$n" -gt 0 ] && [ "$failed" -eq 0 ]
