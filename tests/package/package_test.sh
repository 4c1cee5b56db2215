#!/usr/bin/env bash
# The Debian package end to end (ctest: package_tests, label "package"):
#   1. cpack builds the .deb from this build (into a temp folder; the build tree is unchanged);
#   2. dpkg-deb --info/--contents: name, version, dependencies, conffiles, maintainer scripts,
#      the files and their places, no tests or benchmarks;
#   3. dpkg --root installs it into an empty root (maintainer scripts run chrootless with
#      DPKG_ROOT, so this machine's users and /etc stay as they are): the kms user,
#      /etc/kms and /var/lib/kms with their modes;
#   4. systemd-analyze verify of the installed unit;
#   5. the INSTALLED programs: --version, --help, kms-provision on a fresh SoftHSM token,
#      kmsd --check-config and kmsd itself configured as the unit runs it (the installed
#      example configuration, the PIN from $KMS_PIN_FILE as LoadCredential= hands it over,
#      stderr as the journal stream, a NOTIFY_SOCKET), a real key request with the installed
#      kms-client, SIGHUP, SIGTERM, kms-audit verify;
#   6. dpkg --purge: the files go, /var/lib/kms stays;
#   7. cmake --install into an empty prefix: a working kmsd, the unit's paths rewritten.
# Usage: package_test.sh BUILD_DIR SOURCE_DIR VERSION (as root, as CI runs; 77 = skipped otherwise)
set -euo pipefail

build=$1
source=$2
version=$3
if [[ $(id -u) != 0 ]]; then
  echo "package_tests: needs root (dpkg --root unpacks root-owned files); skipped"
  exit 77  # ctest SKIP_RETURN_CODE
fi
work=$(mktemp -d /tmp/kms-package-test.XXXXXX)
kmsd_pid=
listener_pid=

fail() {
  echo "FAIL: $*" >&2
  for f in "$work/kmsd.log" "$work/notify.log"; do
    [[ -f $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
  done
  exit 1
}
cleanup() {
  local pid
  for pid in $kmsd_pid $listener_pid; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR

# Polls a condition (a command) every 0.1 s for up to 30 s: waits for events, never times them.
wait_for() {
  local what=$1
  shift
  for _ in $(seq 1 300); do
    "$@" && return 0
    sleep 0.1
  done
  fail "timed out waiting for $what"
}
expect_in() {  # expect_in TEXT NEEDLE WHAT
  grep -qF -- "$2" <<<"$1" || fail "$3: no \"$2\" in: $1"
}

echo "== 1. cpack"
cpack --config "$build/CPackConfig.cmake" -B "$work/out" >"$work/cpack.log" 2>&1 ||
  { cat "$work/cpack.log" >&2; fail "cpack"; }
deb=$work/out/ims-conference-kms_${version}_$(dpkg --print-architecture).deb
[[ -f $deb ]] || fail "no $deb: $(ls "$work/out")"
echo "built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"

echo "== 2. dpkg-deb --info / --contents"
info=$(dpkg-deb --info "$deb")
for field in "Package: ims-conference-kms" "Version: $version" "Section: net" \
  "Architecture: $(dpkg --print-architecture)" "Recommends: softhsm2"; do
  expect_in "$info" "$field" "control"
done
depends=$(dpkg-deb --field "$deb" Depends)
for library in libc6 libstdc++6 libssl3 libp11-kit0 libsqlite3-0 libboost-json1.81.0 libsrtp2-1 \
  libtomlplusplus3; do
  expect_in "$depends" "$library" "Depends (dpkg-shlibdeps)"
done
# The allocator the build linked (cmake/allocator.cmake; sanitizer builds keep the system's).
[[ ${4:-system} == jemalloc ]] && expect_in "$depends" libjemalloc2 "Depends (dpkg-shlibdeps)"
for script in postinst prerm postrm conffiles; do
  expect_in "$info" " $script" "control archive"
done
[[ $(dpkg-deb --info "$deb" conffiles) == $'/etc/kms/kmsd.example.toml\n/etc/kms/softhsm2.conf' ]] ||
  fail "conffiles: $(dpkg-deb --info "$deb" conffiles)"
contents=$(dpkg-deb --contents "$deb" | awk '{print $1, $2, $NF}')
for entry in \
  "-rwxr-xr-x root/root ./usr/bin/kmsd" "-rwxr-xr-x root/root ./usr/bin/kms-provision" \
  "-rwxr-xr-x root/root ./usr/bin/kms-client" "-rwxr-xr-x root/root ./usr/bin/kms-audit" \
  "-rwxr-xr-x root/root ./usr/bin/kms-media" \
  "-rw-r--r-- root/root ./lib/systemd/system/kmsd.service" \
  "-rw-r--r-- root/root ./etc/kms/kmsd.example.toml" "-rw-r--r-- root/root ./etc/kms/softhsm2.conf" \
  "-rw-r--r-- root/root ./usr/lib/sysusers.d/ims-conference-kms.conf" \
  "-rw-r--r-- root/root ./usr/lib/tmpfiles.d/ims-conference-kms.conf" \
  "-rw-r--r-- root/root ./usr/share/doc/ims-conference-kms/README.md" \
  "-rw-r--r-- root/root ./usr/share/doc/ims-conference-kms/OPERATIONS.md" \
  "-rw-r--r-- root/root ./usr/share/doc/ims-conference-kms/SERVER.md"; do
  grep -qxF -- "$entry" <<<"$contents" || fail "contents: no \"$entry\""
done
programs=$(grep -c '^-.* \./usr/bin/' <<<"$contents")
[[ $programs == 5 ]] || fail "expected the 5 programs in /usr/bin, found $programs"
if grep -E 'test|bench|\.a$|include/|/etc/kms/kmsd\.toml$|/usr/etc' <<<"$contents"; then
  fail "tests, benchmarks, libraries, headers or a live configuration in the package"
fi

echo "== 3. dpkg --root (an empty root, maintainer scripts chrootless with DPKG_ROOT)"
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
host_passwd=$(sha256sum /etc/passwd)
dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null -i "$deb" \
  >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
[[ $(sha256sum /etc/passwd) == "$host_passwd" ]] || fail "the host's /etc/passwd changed"
kms_uid=$(awk -F: '$1 == "kms" {print $3}' "$root/etc/passwd")
kms_gid=$(awk -F: '$1 == "kms" {print $3}' "$root/etc/group")
[[ -n $kms_uid && -n $kms_gid ]] || fail "postinst created no kms user: $(cat "$root/etc/passwd")"
grep -q '^kms:x:[0-9]*:[0-9]*:[^:]*:/var/lib/kms:/usr/sbin/nologin$' "$root/etc/passwd" ||
  fail "kms user: $(grep '^kms:' "$root/etc/passwd")"
[[ $(stat -c '%a %u:%g' "$root/etc/kms") == "750 0:$kms_gid" ]] ||
  fail "/etc/kms: $(stat -c '%a %u:%g' "$root/etc/kms")"
for dir in var/lib/kms:750 var/lib/kms/softhsm:700 var/lib/kms/softhsm/tokens:700; do
  [[ $(stat -c '%a %u:%g' "$root/${dir%%:*}") == "${dir##*:} $kms_uid:$kms_gid" ]] ||
    fail "/${dir%%:*}: $(stat -c '%a %u:%g' "$root/${dir%%:*}")"
done
dpkg --root="$root" -s ims-conference-kms | grep -q '^Status: install ok installed' ||
  fail "not installed: $(dpkg --root="$root" -s ims-conference-kms)"

echo "== 4. systemd-analyze verify (the installed unit)"
unit=$root/lib/systemd/system/kmsd.service
cmp -s "$unit" "$source/packaging/kmsd.service" || fail "installed unit differs from packaging/kmsd.service"
# verify --root wants a whole system in the root (sysinit.target, /bin/kill): the installed
# unit as it is, but with ExecStart= naming the installed kmsd, verified against this machine.
mkdir -p "$work/verify"
sed "s|^ExecStart=/usr/bin/kmsd |ExecStart=$root/usr/bin/kmsd |" "$unit" >"$work/verify/kmsd.service"
grep -q "^ExecStart=$root/usr/bin/kmsd " "$work/verify/kmsd.service" || fail "no ExecStart=/usr/bin/kmsd"
systemd-analyze verify "$work/verify/kmsd.service" >"$work/verify.log" 2>&1 ||
  { cat "$work/verify.log" >&2; fail "systemd-analyze verify"; }
[[ ! -s $work/verify.log ]] || { cat "$work/verify.log" >&2; fail "systemd-analyze verify warned"; }

echo "== 5. the installed programs"
bin=$root/usr/bin
for program in kmsd kms-provision kms-client kms-audit kms-media; do
  [[ $("$bin/$program" --version) == "$program $version" ]] || fail "$program --version"
  "$bin/$program" --help >/dev/null || fail "$program --help"
done

# A fresh SoftHSM token and PKI; the configuration made from the INSTALLED example the way
# docs/OPERATIONS.md "Installing" says (absolute paths, no pin_file: the unit's KMS_PIN_FILE).
"$source/tokens/dev/create-token" softhsm "$work/token" kms >/dev/null
export SOFTHSM2_CONF=$work/token/softhsm2.conf
mkdir -p "$work/pki" "$work/state" "$work/credentials" "$work/ue"
(
  cd "$work/pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=test server CA" -keyout ca.key -out ca.crt 2>/dev/null
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=test bridge CA" -keyout bridge-ca.key -out bridge-ca.crt 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kms" \
    -keyout server.key -out server.csr 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.crt 2>/dev/null
)
cp "$work/token/user.pin" "$work/credentials/user.pin"  # what LoadCredential= provides
module=$(sed -n 's/^module = "\(.*\)"$/\1/p' "$work/token/token.toml")
config=$work/kmsd.toml
sed -e "s|^tls_cert = .*|tls_cert = \"$work/pki/server.crt\"|" \
  -e "s|^tls_key = .*|tls_key = \"$work/pki/server.key\"|" \
  -e "s|^bridge_ca = .*|bridge_ca = \"$work/pki/bridge-ca.crt\"|" \
  -e "s|^path = \"audit.log\".*|path = \"$work/state/audit.log\"|" \
  -e "s|^path = \"kms.db\".*|path = \"$work/state/kms.db\"|" \
  -e "s|^module = .*|module = \"$module\"|" \
  -e "s|^uri = .*|uri = \"pkcs11:token=kms\"|" \
  -e "/^pin_file = /d" "$root/etc/kms/kmsd.example.toml" >"$config"
grep -q pin_file "$config" && fail "pin_file left in $config"
# Without the unit's KMS_PIN_FILE the configuration names no PIN source: exit 1, and why.
status=0
"$bin/kmsd" --check-config "$config" >/dev/null 2>"$work/check.err" || status=$?
[[ $status == 1 ]] || fail "kmsd --check-config without a PIN source: exit $status"
expect_in "$(cat "$work/check.err")" "no PIN source" "kmsd --check-config without a PIN source"
export KMS_PIN_FILE=$work/credentials/user.pin

"$bin/kmsd" --check-config "$config" >"$work/check.out" || fail "kmsd --check-config: $(cat "$work/check.out")"
expect_in "$(cat "$work/check.out")" "configuration OK" "kmsd --check-config"
provision() { "$bin/kms-provision" --config "$config" "$@"; }
provision init >/dev/null || fail "kms-provision init"
for who in alice bob; do
  provision subscriber add "sip:$who@ims.example.net" --insecure-plaintext-export \
    --out "$work/ue/$who.key" >/dev/null 2>&1 || fail "kms-provision subscriber add $who"
done
profile=$(provision --json status | sed -n 's/.*"profile":"\([a-z0-9-]*\)".*/\1/p' | head -1)

# The service manager's end of NOTIFY_SOCKET: every datagram, one per line, until STOPPING=1.
python3 - "$work/notify.sock" "$work/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as log:
    log.write("bound\n")
    while True:
        message = s.recv(4096).decode().replace("\n", " ")
        log.write(message + "\n")
        if message.startswith("STOPPING=1"):
            break
PY
listener_pid=$!
wait_for "the notify listener" grep -qsx bound "$work/notify.log"

# stderr is "the journal": JOURNAL_STREAM names its device and inode, as systemd sets it.
: >"$work/kmsd.log"
journal_stream=$(stat -c '%d:%i' "$work/kmsd.log")
JOURNAL_STREAM=$journal_stream NOTIFY_SOCKET=$work/notify.sock \
  "$bin/kmsd" --config "$config" --listen 127.0.0.1:0 2>>"$work/kmsd.log" &
kmsd_pid=$!
wait_for "READY=1" grep -q '^READY=1 STATUS=listening on 127.0.0.1:' "$work/notify.log"
port=$(sed -n 's/^READY=1 STATUS=listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$work/notify.log")
server=(--server "https://127.0.0.1:$port" --ca "$work/pki/ca.crt")
"$bin/kms-client" health "${server[@]}" >"$work/health.out" || fail "kms-client health"
expect_in "$(cat "$work/health.out")" "readyz 200" "kms-client health"

# A real key request: UE-A invites UE-B, UE-B asks the installed kmsd, UE-A opens the relay.
A=sip:alice@ims.example.net
B=sip:bob@ims.example.net
"$bin/kms-client" ue invite --id "$A" --key-file "$work/ue/alice.key" --state "$work/ue/a.state" \
  --invitee "$B" --out "$work/ue/e_a.b64" --profile "$profile" >"$work/invite.out" 2>&1 ||
  fail "kms-client ue invite: $(cat "$work/invite.out")"
"$bin/kms-client" ue request --id "$B" --key-file "$work/ue/bob.key" --chair "$A" \
  --chair-envelope "$work/ue/e_a.b64" --out-relay "$work/ue/relay.json" \
  --out-key "$work/ue/bob.media.json" --profile "$profile" "${server[@]}" >"$work/request.out" ||
  fail "kms-client ue request: $(cat "$work/request.out")"
"$bin/kms-client" ue open --id "$A" --key-file "$work/ue/alice.key" --state "$work/ue/a.state" \
  --relay "$work/ue/relay.json" --out-key "$work/ue/alice.media.json" --profile "$profile" \
  >/dev/null || fail "kms-client ue open"
[[ -s $work/ue/bob.media.json && -s $work/ue/alice.media.json ]] || fail "no media keys"

# SIGHUP: RELOADING=1, READY=1 again; SIGTERM: STOPPING=1, exit 0.
kill -HUP "$kmsd_pid"
wait_for "RELOADING=1" grep -q '^RELOADING=1 MONOTONIC_USEC=[0-9]*$' "$work/notify.log"
# The count is taken on each try (a "$(grep -c ...)" argument would be taken once, before the
# second READY=1 may have arrived).
ready_count_at_least() { (($(grep -c '^READY=1' "$work/notify.log") >= $1)); }
wait_for "READY=1 after the reload" ready_count_at_least 2
kill -TERM "$kmsd_pid"
status=0
wait "$kmsd_pid" || status=$?
kmsd_pid=
[[ $status == 0 ]] || fail "kmsd exited with $status"
wait_for "STOPPING=1" grep -qx 'STOPPING=1' "$work/notify.log"
wait "$listener_pid" || true
listener_pid=

# Journald priorities on every line (auto: stderr is the JOURNAL_STREAM).
grep -q '^<6>time=.* msg=listening ' "$work/kmsd.log" || fail "no <6> listening line"
grep -q '^<6>time=.* msg=request .*status=200' "$work/kmsd.log" || fail "no <6> request line"
if grep -v '^<[3467]>time=' "$work/kmsd.log"; then fail "a log line without its priority"; fi
"$bin/kms-audit" verify "$work/state/audit.log" --anchor-db "$work/state/kms.db" >/dev/null ||
  fail "kms-audit verify"

echo "== 6. dpkg --purge"
dpkg --root="$root" --force-script-chrootless --log=/dev/null --purge ims-conference-kms \
  >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --purge"; }
[[ ! -e $root/usr/bin/kmsd && ! -e $unit && ! -e $root/etc/kms/kmsd.example.toml ]] ||
  fail "files left after purge"
[[ -d $root/var/lib/kms ]] || fail "purge removed /var/lib/kms (the keys and the audit log)"

echo "== 7. cmake --install into an empty prefix"
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "cmake --install"; }
[[ $("$prefix/bin/kmsd" --version) == "kmsd $version" ]] || fail "installed kmsd --version"
"$prefix/bin/kmsd" --check-config "$config" >/dev/null || fail "installed kmsd --check-config"
grep -qx "ExecStart=$prefix/bin/kmsd --config $prefix/etc/kms/kmsd.toml" \
  "$prefix/lib/systemd/system/kmsd.service" || fail "unit paths not rewritten for the prefix"
[[ -f $prefix/etc/kms/kmsd.example.toml && -f $prefix/share/doc/ims-conference-kms/OPERATIONS.md ]] ||
  fail "example configuration or docs missing under the prefix"
[[ $(find "$prefix/bin" -type f | wc -l) == 5 ]] || fail "not exactly the 5 programs in $prefix/bin"
if grep -v "^$prefix/" "$build/install_manifest.txt"; then fail "installed outside the prefix"; fi

echo "package_tests: 1 passed, 0 failed"
