# shellcheck shell=bash
# benches/load/lib.sh: shell functions shared by benches/load/run and benches/load/instructions
# (sourced, not run).

# free_ports N: N loopback ports the kernel chose (all bound at once, then released), on one line.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# fill_template IN OUT [STITCH_PORT ADMIN_PORT]: copy a config template, filling its @NAME@
# placeholders from the variables tmp, backend_port, sink_port, proxy_port, stitch_port,
# admin_port, nofile and the peers' pingap_port, otlp_port, haproxy_port, caddy_port and
# caddy_admin_port (the optional arguments override stitch_port and admin_port).
fill_template() {
  # shellcheck disable=SC2154  # tmp is the caller's
  sed -e "s|@TMP@|$tmp|g" -e "s|@BACKEND_PORT@|${backend_port:-}|g" \
      -e "s|@SINK_PORT@|${sink_port:-}|g" -e "s|@PROXY_PORT@|${proxy_port:-}|g" \
      -e "s|@STITCH_PORT@|${3:-${stitch_port:-}}|g" -e "s|@ADMIN_PORT@|${4:-${admin_port:-}}|g" \
      -e "s|@PINGAP_PORT@|${pingap_port:-}|g" -e "s|@OTLP_PORT@|${otlp_port:-}|g" \
      -e "s|@HAPROXY_PORT@|${haproxy_port:-}|g" -e "s|@CADDY_PORT@|${caddy_port:-}|g" \
      -e "s|@CADDY_ADMIN_PORT@|${caddy_admin_port:-}|g" \
      -e "s|@NOFILE@|${nofile:-4096}|g" "$1" > "$2"
}

# wait_http URL PID SECONDS [CURL-ARGS...]: poll URL until it answers (with -f: until it answers
# with a success status); fail when PID exits or time runs out.
wait_http() {
  local deadline=$((SECONDS + $3))
  while [ "$SECONDS" -le "$deadline" ]; do
    curl -s -o /dev/null --max-time 2 "${@:4}" "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "${0##*/}: process $2 exited while starting" >&2; return 1; }
    sleep 0.05
  done
  echo "${0##*/}: $1 did not answer within $3 s" >&2
  return 1
}

# wait_file FILE PID SECONDS: poll until FILE exists (a server's "listening" mark); fail when PID
# exits or time runs out.
wait_file() {
  local deadline=$((SECONDS + $3))
  while [ "$SECONDS" -le "$deadline" ]; do
    [ -e "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "${0##*/}: process $2 exited while starting" >&2; return 1; }
    sleep 0.05
  done
  echo "${0##*/}: no $1 within $3 s" >&2
  return 1
}
