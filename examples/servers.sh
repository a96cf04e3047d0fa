# examples/servers.sh: what an example's `run` needs to start its own
# servers on 127.0.0.1 (free ports, a private temp dir), sourced by them.
#   . "$here/../servers.sh"
#   tmp=$(mktemp -d ...); trap 'stop_servers; rm -rf "$tmp"' EXIT INT TERM
#   start_nginx ROOT_DIR        sets nginx_port; serves ROOT_DIR/users/ as JSON
#   start_redis                 sets redis_port (no persistence)
nginx_port=""
redis_port=""

start_nginx() {
    for try in 1 2 3 4 5 6 7 8 9 10; do
        p=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000 ))
        cat >"$tmp/nginx.conf" <<CONF
daemon on;
master_process off;
pid $tmp/nginx.pid;
error_log $tmp/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp/body; proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fcgi; uwsgi_temp_path $tmp/uwsgi; scgi_temp_path $tmp/scgi;
  server {
    listen 127.0.0.1:$p;
    root $1;
    location /users/ { default_type application/json; }
  }
}
CONF
        if nginx -p "$tmp" -c "$tmp/nginx.conf" 2>"$tmp/start.log"; then nginx_port=$p; return 0; fi
        grep -q "in use" "$tmp/start.log" || { cat "$tmp/start.log" >&2; return 1; }
    done
    echo "could not start nginx" >&2
    return 1
}

start_redis() {
    for try in 1 2 3 4 5 6 7 8 9 10; do
        p=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000 ))
        redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
            --dir "$tmp" --logfile "$tmp/redis.log" --pidfile "$tmp/redis.pid"
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            if redis-cli -p "$p" ping >/dev/null 2>&1; then redis_port=$p; return 0; fi
            grep -q "in use" "$tmp/redis.log" 2>/dev/null && break
            sleep 0.1
        done
        rm -f "$tmp/redis.log"
    done
    echo "could not start redis-server" >&2
    return 1
}

stop_servers() {
    [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")" 2>/dev/null
    [ -n "$redis_port" ] && redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1
    return 0
}
