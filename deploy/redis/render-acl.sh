#!/bin/sh
# Render the Redis ACL file: render-acl.sh TEMPLATE OUTPUT.
# Reads REDIS_BOT_PASSWORD and REDIS_WORKER_PASSWORD (both required) and writes OUTPUT (mode 600) with their SHA-256
# in place of @BOT_PASSWORD_SHA256@ and @WORKER_PASSWORD_SHA256@, comments and blank lines removed (Redis' ACL file
# takes user lines only). Run by the redis service at start (docker-compose.yml) and by tests/test_redis_acl.py.
set -eu
: "${REDIS_BOT_PASSWORD:?set REDIS_BOT_PASSWORD}"
: "${REDIS_WORKER_PASSWORD:?set REDIS_WORKER_PASSWORD}"
sha256() { printf '%s' "$1" | sha256sum | cut -d ' ' -f 1; }
umask 077
sed -e '/^[[:space:]]*#/d' -e '/^[[:space:]]*$/d' \
    -e "s/@BOT_PASSWORD_SHA256@/$(sha256 "$REDIS_BOT_PASSWORD")/" \
    -e "s/@WORKER_PASSWORD_SHA256@/$(sha256 "$REDIS_WORKER_PASSWORD")/" \
    "$1" > "$2"
