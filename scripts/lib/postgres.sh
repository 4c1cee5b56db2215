# A throwaway PostgreSQL cluster for scripts/demo-cluster (as pg_virtualenv does): initdb in
# a folder, a server on a unix socket in that folder and on a loopback port, a role `kms`
# with a random password (in a file, mode 0600) owning a database `kms`. Sourced, not run.
# As root the cluster runs as the `postgres` user (initdb refuses root).

pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb ]] && { echo "$dir"; return; }
  done
  return 1
}

# pg_start DIR PORT: initialises DIR/data, starts the server, creates role and database;
# sets pg_dir, pg_port, pg_password_file, pg_url (without the password).
pg_start() {
  pg_dir=$1 pg_port=$2
  local bin
  bin=$(pg_bindir) || { echo "PostgreSQL is not installed (scripts/setup installs it)" >&2; return 1; }
  local as=()
  if [[ $(id -u) -eq 0 ]]; then as=(runuser -u postgres --); fi
  mkdir -p "$pg_dir"
  [[ ${#as[@]} -eq 0 ]] || chown postgres: "$pg_dir"
  chmod 700 "$pg_dir"
  # The superuser's password only ever serves this throwaway cluster's set-up.
  echo postgres-local-only > "$pg_dir/superuser.password"
  [[ ${#as[@]} -eq 0 ]] || chown postgres: "$pg_dir/superuser.password"
  chmod 600 "$pg_dir/superuser.password"
  "${as[@]}" "$bin/initdb" -D "$pg_dir/data" -A scram-sha-256 -U postgres \
    --pwfile="$pg_dir/superuser.password" >"$pg_dir/initdb.log" 2>&1 ||
    { cat "$pg_dir/initdb.log" >&2; return 1; }
  "${as[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -s \
    -o "-k $pg_dir -c listen_addresses=127.0.0.1 -p $pg_port -c fsync=on -c synchronous_commit=on" \
    start || { cat "$pg_dir/server.log" >&2; return 1; }
  pg_password_file=$pg_dir/kms.password
  (umask 077 && openssl rand -hex 16 > "$pg_password_file")
  PGPASSWORD=postgres-local-only "$bin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 -v pw="$(cat "$pg_password_file")" <<'SQL'
CREATE ROLE kms LOGIN PASSWORD :'pw';
CREATE DATABASE kms OWNER kms;
SQL
  pg_url="postgresql://kms@127.0.0.1:$pg_port/kms"
}

pg_stop() {
  [[ -n ${pg_dir:-} && -d ${pg_dir}/data ]] || return 0
  local bin as=()
  bin=$(pg_bindir) || return 0
  if [[ $(id -u) -eq 0 ]]; then as=(runuser -u postgres --); fi
  "${as[@]}" "$bin/pg_ctl" -D "$pg_dir/data" -m fast -w -s stop || true
  pg_dir=  # stopped: a second call (the exit trap) does nothing
}
