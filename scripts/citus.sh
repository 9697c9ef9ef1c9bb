#!/usr/bin/env bash
# Builds Citus (distributed PostgreSQL) from its source and installs it into the machine's
# PostgreSQL 15, once per machine: the build is kept in $ETL_CITUS_BUILD_DIR (default
# ~/.cache/etl/citus-VERSION, outside the work tree) and only installed again when the server
# lacks it. The source is not in this repository (Citus is AGPL-3.0): it is taken from
# $ETL_CITUS_VENDOR (default ../shared/vendor beside the checkout), which holds
# citus-VERSION.tar.gz (the tag as `git archive` writes it) and, optionally, a patch for newer
# PostgreSQL 15 minor versions.
#   scripts/citus.sh [check]
#     (no argument) build and install when needed; exit 0 once the server has Citus
#     check          exit 0 when the server has Citus, 3 when it does not (nothing built)
# Exit 3 also when the source is missing: the tests that need a Citus cluster then skip.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=13.2.2  # its extension version is 13.2-N
PG_CONFIG="${ETL_PG_CONFIG:-$(ls /usr/lib/postgresql/15/bin/pg_config 2>/dev/null || command -v pg_config || true)}"
VENDOR="${ETL_CITUS_VENDOR:-$(pwd)/../shared/vendor}"
BUILD="${ETL_CITUS_BUILD_DIR:-$HOME/.cache/etl/citus-$VERSION}"

installed() {
  [ -n "$PG_CONFIG" ] && [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] \
    && grep -qs "default_version = '${VERSION%.*}-" "$("$PG_CONFIG" --sharedir)/extension/citus.control"
}

if installed; then
  echo "citus: Citus $VERSION is installed in $("$PG_CONFIG" --pkglibdir)"
  exit 0
fi
[ "${1:-}" = check ] && { echo "citus: not installed (scripts/citus.sh builds it)" >&2; exit 3; }
if [ ! -f "$VENDOR/citus-$VERSION.tar.gz" ]; then
  echo "citus: no Citus source at $VENDOR/citus-$VERSION.tar.gz (set ETL_CITUS_VENDOR): the Citus tests skip" >&2
  exit 3
fi

# The server's headers (which include GSSAPI's) and the libraries Citus links (lz4, zstd).
if [ -z "$PG_CONFIG" ] || [ ! -d "$("$PG_CONFIG" --includedir-server)" ] || ! dpkg -s liblz4-dev libzstd-dev libkrb5-dev >/dev/null 2>&1; then
  echo "citus: installing PostgreSQL 15's server headers, Kerberos', lz4 and zstd from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq postgresql-server-dev-15 libkrb5-dev liblz4-dev libzstd-dev >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq postgresql-server-dev-15 libkrb5-dev liblz4-dev libzstd-dev >/dev/null; }
  PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
fi

if [ ! -f "$BUILD/src/backend/distributed/citus.so" ]; then
  echo "citus: building Citus $VERSION in $BUILD (a few minutes on 2 cores)"
  rm -rf "$BUILD" && mkdir -p "$BUILD"
  tar -xzf "$VENDOR/citus-$VERSION.tar.gz" -C "$BUILD"
  # Newer PostgreSQL 15 releases export have_createdb_privilege() themselves; Citus defines its
  # own copy, which then clashes: the vendor's patch drops it, only where the server has it.
  patch_file="$VENDOR/citus-$VERSION-pg15-compat.patch"
  if [ -f "$patch_file" ] && grep -q have_createdb_privilege "$("$PG_CONFIG" --includedir-server)/commands/dbcommands.h"; then
    (cd "$BUILD" && patch -s -p1 < "$patch_file")
  fi
  (cd "$BUILD" && ./configure -q --without-libcurl PG_CONFIG="$PG_CONFIG" >/dev/null && make -s -j"$(nproc)" >/dev/null)
fi
echo "citus: installing into $("$PG_CONFIG" --pkglibdir)"
(cd "$BUILD" && make -s install >/dev/null)
installed || { echo "citus: the install did not leave citus.so and its SQL where the server looks" >&2; exit 1; }
echo "citus: Citus $VERSION is installed"
