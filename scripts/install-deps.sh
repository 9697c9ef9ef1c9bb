#!/usr/bin/env bash
# Installs what the tests need and a fresh machine may lack: PostgreSQL and Chromium (Debian's
# packages; Chromium renders `etl report`'s page headless) and moto's S3 server (PyPI).
# Idempotent: does nothing when all are present.
set -euo pipefail

need_pg=0
for bin in initdb pg_ctl postgres; do
  command -v "$bin" >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/"$bin" >/dev/null 2>&1 || need_pg=1
done
if [ "$need_pg" = 1 ]; then
  echo "install-deps: installing PostgreSQL from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq postgresql postgresql-client >/dev/null
fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "install-deps: installing Chromium from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if ! python3 -c 'import moto.server, boto3' >/dev/null 2>&1; then
  echo "install-deps: installing moto's S3 server from PyPI"
  python3 -m pip install --quiet 'moto[server,s3]' boto3
fi
echo "install-deps: PostgreSQL, Chromium and the S3 server are available"
