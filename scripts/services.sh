#!/usr/bin/env bash
# Starts, stops or reports the services the tests talk to, on loopback only:
#   PostgreSQL on 127.0.0.1:$ETL_PG_PORT (default 15432, the seed's), role etl/etlpass,
#              databases etl_db and etl_test; its log is $ETL_SERVICES_DIR/pg.log, where the
#              role etl_traced/etltraced has every statement written;
#   S3 (moto's server) on 127.0.0.1:$ETL_S3_PORT (default 19000, the seed's MinIO port),
#              with the seed's bucket fake-data-for-training;
#   S3 with credentials checked (a second moto server, its IAM enforced) on
#              127.0.0.1:$ETL_S3_AUTH_PORT (default 19001): one user whose keys are written to
#              $ETL_SERVICES_DIR/s3-auth.env, allowed s3:* on the bucket etl-auth. The first
#              server accepts any key; this one is for the wrong-credentials tests.
#   a Citus cluster (when scripts/citus.sh has installed Citus): a coordinator on
#              127.0.0.1:$ETL_CITUS_PORT (default 15440) and two workers on the next two ports,
#              each with the role etl/etlpass and the database etl_test holding the extension;
#              the workers are the coordinator's nodes. Without Citus it is not started and the
#              tests that need it skip.
# Idempotent: `start` on running services only checks them. State lives in $ETL_SERVICES_DIR
# (default /var/tmp/etl-services-UID), outside the work tree.
#   scripts/services.sh start|stop|status|env
set -euo pipefail

# Under /var/tmp, not $HOME: the postgres user must reach it when we run as root.
DIR="${ETL_SERVICES_DIR:-/var/tmp/etl-services-$(id -u)}"
PG_PORT="${ETL_PG_PORT:-15432}"
S3_PORT="${ETL_S3_PORT:-19000}"
PGDATA="$DIR/pg"
S3_PID="$DIR/s3.pid"
S3_AUTH_PORT="${ETL_S3_AUTH_PORT:-19001}"
S3_AUTH_PID="$DIR/s3-auth.pid"
S3_AUTH_ENV="$DIR/s3-auth.env"
CITUS_PORT="${ETL_CITUS_PORT:-15440}"
CITUS_DIR="$DIR/citus"

pg_bin() {
  local b
  b=$(command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1)
  [ -n "$b" ] || { echo "services: $1 not found; run scripts/install-deps.sh" >&2; exit 1; }
  echo "$b"
}

# PostgreSQL refuses to run as root: run it as the `postgres` system user (created if missing).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" --shell /bin/sh postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_running() { [ -f "$PGDATA/postmaster.pid" ] && as_pg "$(pg_bin pg_ctl)" -D "$PGDATA" status >/dev/null 2>&1; }

# Initialises (the first time) and starts one PostgreSQL instance on loopback:
#   start_instance DATA PORT LOG HOST_AUTH [EXTRA_CONF_LINE]
start_instance() {
  local data=$1 port=$2 log=$3 auth=$4 extra=${5:-}
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" = 0 ] && { id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" --shell /bin/sh postgres; chown -R postgres "$DIR"; }
    as_pg "$(pg_bin initdb)" -D "$data" -U postgres --auth-local=trust --auth-host="$auth" -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >> "$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
$extra
CONF
  fi
  if ! { [ -f "$data/postmaster.pid" ] && as_pg "$(pg_bin pg_ctl)" -D "$data" status >/dev/null 2>&1; }; then
    as_pg "$(pg_bin pg_ctl)" -D "$data" -l "$log" -w -t 60 start >/dev/null
  fi
}

start_pg() {
  mkdir -p "$DIR"
  start_instance "$PGDATA" "$PG_PORT" "$DIR/pg.log" scram-sha-256
  local psql=(as_pg "$(pg_bin psql)" -h "$PGDATA" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
  "${psql[@]}" -d postgres -c "DO \$\$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl') THEN
        CREATE ROLE etl LOGIN PASSWORD 'etlpass' CREATEDB;
      END IF;
      -- For the secrets test: a role whose password is easy to find in any output.
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl_secret') THEN
        CREATE ROLE etl_secret LOGIN PASSWORD 'Xyzzy-5150-PgSecret';
        GRANT etl_secret TO etl;
      END IF;
      -- For the statements test: every statement of this role's sessions goes to the log.
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl_traced') THEN
        CREATE ROLE etl_traced LOGIN PASSWORD 'etltraced';
        GRANT etl_traced TO etl;
      END IF;
      ALTER ROLE etl_traced SET log_statement = 'all';
      -- For the connection-error tests: a role that may not log in (SQLSTATE 28000), and one
      -- with no connection slot (53300).
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl_nologin') THEN
        CREATE ROLE etl_nologin NOLOGIN PASSWORD 'etlnologin';
      END IF;
      IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl_noslot') THEN
        CREATE ROLE etl_noslot LOGIN PASSWORD 'etlnoslot' CONNECTION LIMIT 0;
      END IF; END \$\$;" >/dev/null
  for db in etl_db etl_test; do
    if [ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
      "${psql[@]}" -d postgres -c "CREATE DATABASE $db OWNER etl" >/dev/null
    fi
  done
  echo "services: PostgreSQL ready on 127.0.0.1:$PG_PORT (logs: $DIR/pg.log)"
}

s3_running() { [ -f "$S3_PID" ] && kill -0 "$(cat "$S3_PID")" 2>/dev/null; }

start_s3() {
  mkdir -p "$DIR"
  if ! s3_running; then
    nohup python3 -m moto.server -H 127.0.0.1 -p "$S3_PORT" >"$DIR/s3.log" 2>&1 &
    echo $! > "$S3_PID"
  fi
  for _ in $(seq 1 100); do
    if python3 - "$S3_PORT" <<'PY' >/dev/null 2>&1
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="minioadmin", aws_secret_access_key="minioadmin123")
names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
if "fake-data-for-training" not in names:
    s3.create_bucket(Bucket="fake-data-for-training")
PY
    then
      echo "services: S3 (moto) ready on 127.0.0.1:$S3_PORT (logs: $DIR/s3.log)"
      return 0
    fi
    sleep 0.2
  done
  echo "services: the S3 server did not start; see $DIR/s3.log" >&2
  tail -20 "$DIR/s3.log" >&2 || true
  exit 1
}

s3_auth_running() { [ -f "$S3_AUTH_PID" ] && kill -0 "$(cat "$S3_AUTH_PID")" 2>/dev/null; }

# moto checks signatures and IAM policies once its "initial no-auth action count" is spent:
# the user and its keys are made while it is unlimited, then it is set to 0.
start_s3_auth() {
  mkdir -p "$DIR"
  if s3_auth_running && [ -s "$S3_AUTH_ENV" ]; then
    echo "services: S3 with credentials checked ready on 127.0.0.1:$S3_AUTH_PORT"
    return 0
  fi
  if s3_auth_running; then kill "$(cat "$S3_AUTH_PID")"; sleep 0.5; fi
  rm -f "$S3_AUTH_ENV"
  nohup python3 -m moto.server -H 127.0.0.1 -p "$S3_AUTH_PORT" >"$DIR/s3-auth.log" 2>&1 &
  echo $! > "$S3_AUTH_PID"
  for _ in $(seq 1 100); do
    if python3 - "$S3_AUTH_PORT" "$S3_AUTH_ENV" <<'PY' >/dev/null 2>&1
import json, sys, urllib.request, boto3
port, out = sys.argv[1], sys.argv[2]
ep = f"http://127.0.0.1:{port}"
kw = dict(endpoint_url=ep, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **kw)
try:
    iam.create_user(UserName="etl-auth")
except iam.exceptions.EntityAlreadyExistsException:
    pass  # a retry after a partial setup
iam.put_user_policy(UserName="etl-auth", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="etl-auth")["AccessKey"]
s3 = boto3.client("s3", **kw)
if "etl-auth" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
    s3.create_bucket(Bucket="etl-auth")
urllib.request.urlopen(urllib.request.Request(ep + "/moto-api/reset-auth", data=b"0",
                                              headers={"Content-Type": "text/plain"}, method="POST"))
with open(out, "w") as f:
    f.write(f"export ETL_TEST_S3_AUTH_ENDPOINT={ep}\n"
            f"export ETL_TEST_S3_AUTH_BUCKET=etl-auth\n"
            f"export ETL_TEST_S3_AUTH_ACCESS_KEY={key['AccessKeyId']}\n"
            f"export ETL_TEST_S3_AUTH_SECRET_KEY='{key['SecretAccessKey']}'\n")
PY
    then
      echo "services: S3 with credentials checked ready on 127.0.0.1:$S3_AUTH_PORT (logs: $DIR/s3-auth.log)"
      return 0
    fi
    sleep 0.2
  done
  echo "services: the S3 server with credentials checked did not start; see $DIR/s3-auth.log" >&2
  tail -20 "$DIR/s3-auth.log" >&2 || true
  exit 1
}

# The Citus cluster's nodes: name and port.
citus_nodes() { echo "coordinator $CITUS_PORT worker1 $((CITUS_PORT + 1)) worker2 $((CITUS_PORT + 2))"; }
citus_running() { as_pg "$(pg_bin pg_ctl)" -D "$CITUS_DIR/coordinator" status >/dev/null 2>&1; }

start_citus() {
  if ! scripts/citus.sh check >/dev/null 2>&1; then
    echo "services: Citus is not installed (scripts/citus.sh builds it): no Citus cluster, its tests skip"
    return 0
  fi
  set -- $(citus_nodes)
  while [ $# -gt 0 ]; do
    local name=$1 port=$2 data="$CITUS_DIR/$1"
    shift 2
    # Loopback only, and trusted there: the nodes connect to each other as the client's role.
    start_instance "$data" "$port" "$CITUS_DIR/$name.log" trust "shared_preload_libraries = 'citus'"
    local psql=(as_pg "$(pg_bin psql)" -h "$data" -p "$port" -U postgres -v ON_ERROR_STOP=1 -qAt)
    # etl_traced, as on the plain server, for the statements test (its statements logged on the
    # coordinator, below); on every node, as Citus connects to the workers as the client's role.
    "${psql[@]}" -d postgres -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl') THEN
          CREATE ROLE etl LOGIN PASSWORD 'etlpass' CREATEDB;
        END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'etl_traced') THEN
          CREATE ROLE etl_traced LOGIN PASSWORD 'etltraced';
          GRANT etl_traced TO etl;
        END IF; END \$\$;" >/dev/null
    if [ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'etl_test'")" != 1 ]; then
      "${psql[@]}" -d postgres -c "CREATE DATABASE etl_test OWNER etl" >/dev/null
    fi
    "${psql[@]}" -d etl_test -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS citus" >/dev/null
  done
  local coord=(as_pg "$(pg_bin psql)" -h "$CITUS_DIR/coordinator" -p "$CITUS_PORT" -U postgres -d etl_test -v ON_ERROR_STOP=1 -qAt)
  "${coord[@]}" -c "ALTER ROLE etl_traced SET log_statement = 'all'" >/dev/null
  # Each log line names its session's application: etl's own (`etl`) apart from the connections
  # Citus opens to the coordinator's own placements (`citus_internal ...`).
  "${coord[@]}" -c "ALTER SYSTEM SET log_line_prefix = '%m [%p/%a] '" -c "SELECT pg_reload_conf()" >/dev/null
  "${coord[@]}" -c "SELECT citus_set_coordinator_host('127.0.0.1', $CITUS_PORT)" >/dev/null
  for port in $((CITUS_PORT + 1)) $((CITUS_PORT + 2)); do
    if [ "$("${coord[@]}" -c "SELECT count(*) FROM pg_dist_node WHERE nodeport = $port")" = 0 ]; then
      "${coord[@]}" -c "SELECT citus_add_node('127.0.0.1', $port)" >/dev/null
    fi
  done
  echo "services: Citus cluster ready: coordinator 127.0.0.1:$CITUS_PORT, workers on $((CITUS_PORT + 1)) and $((CITUS_PORT + 2)) (logs: $CITUS_DIR/*.log)"
}

stop_citus() {
  set -- $(citus_nodes)
  while [ $# -gt 0 ]; do
    if [ -f "$CITUS_DIR/$1/postmaster.pid" ] && as_pg "$(pg_bin pg_ctl)" -D "$CITUS_DIR/$1" status >/dev/null 2>&1; then
      as_pg "$(pg_bin pg_ctl)" -D "$CITUS_DIR/$1" -m fast -w stop >/dev/null && echo "services: Citus $1 stopped"
    fi
    shift 2
  done
}

stop_all() {
  if pg_running; then
    as_pg "$(pg_bin pg_ctl)" -D "$PGDATA" -m fast -w stop >/dev/null && echo "services: PostgreSQL stopped"
  fi
  if s3_running; then
    kill "$(cat "$S3_PID")" && echo "services: S3 server stopped"
  fi
  rm -f "$S3_PID"
  if s3_auth_running; then
    kill "$(cat "$S3_AUTH_PID")" && echo "services: S3 server with credentials checked stopped"
  fi
  rm -f "$S3_AUTH_PID" "$S3_AUTH_ENV"
  stop_citus
}

print_env() {
  cat <<ENV
export ETL_TEST_DATABASE_URL=postgres://etl:etlpass@127.0.0.1:$PG_PORT/etl_test
export ETL_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export ETL_TEST_S3_ACCESS_KEY=minioadmin
export ETL_TEST_S3_SECRET_KEY=minioadmin123
export ETL_TEST_PG_LOG=$DIR/pg.log
export ETL_PG_PORT=$PG_PORT
ENV
  [ -s "$S3_AUTH_ENV" ] && cat "$S3_AUTH_ENV"
  if [ -f "$CITUS_DIR/coordinator/postmaster.pid" ] && citus_running; then
    echo "export ETL_TEST_CITUS_URL=postgres://etl:etlpass@127.0.0.1:$CITUS_PORT/etl_test"
    echo "export ETL_TEST_CITUS_LOG=$CITUS_DIR/coordinator.log"
  fi
  return 0
}

case "${1:-}" in
  start) start_pg; start_s3; start_s3_auth; start_citus ;;
  stop) stop_all ;;
  status)
    pg_running && echo "PostgreSQL: running on 127.0.0.1:$PG_PORT" || echo "PostgreSQL: stopped"
    s3_running && echo "S3: running on 127.0.0.1:$S3_PORT" || echo "S3: stopped"
    s3_auth_running && echo "S3 (credentials checked): running on 127.0.0.1:$S3_AUTH_PORT" || echo "S3 (credentials checked): stopped"
    [ -f "$CITUS_DIR/coordinator/postmaster.pid" ] && citus_running && echo "Citus: coordinator on 127.0.0.1:$CITUS_PORT" || echo "Citus: stopped" ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
