#!/bin/bash
# Container health check: exit 0 when GET /health/ready answers 200 (model loaded, warmed up,
# workers alive), 1 otherwise, silently either way (the engine keeps the output with each
# probe). Plain bash (/dev/tcp), so the slim image needs no curl.
# Reads the same AFT_HOST / AFT_PORT as the service.
host="${AFT_HOST:-0.0.0.0}"
case "$host" in 0.0.0.0 | "" ) host=127.0.0.1 ;; :: | "[::]") host=::1 ;; esac
port="${AFT_PORT:-8080}"
# bash reports a failed connect itself ("Connection refused", twice) on the shell's stderr; the
# group's redirection is in place before the connect, a trailing one on `exec` would not be.
{ exec 3<>"/dev/tcp/${host}/${port}"; } 2>/dev/null || exit 1
printf 'GET /health/ready HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' 2>/dev/null >&3 || exit 1
IFS= read -r -t "${AFT_HEALTHCHECK_TIMEOUT:-3}" status <&3 || exit 1
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) exit 1 ;;
esac
