# Steps shared by scripts/demo (one kmsd) and scripts/demo-cluster (three kmsd nodes behind
# HAProxy): build, SoftHSM token, demo PKI, key ceremony and provisioning, one conference's
# seed flow (steps 2-15 and Figure 20) against chosen servers, SRTP media. Sourced, not run:
# the caller defines step, info and fail, sets $root, $build and $run, and works in $run.

A=sip:alice@ims.example.net
B=sip:bob@ims.example.net
C=sip:carol@ims.example.net
BRIDGE=sip:bridge1@ims.example.net

# Installs the packages and builds (KMS_DEMO_SKIP_BUILD=1: reuse an existing build); sets
# bin_kmsd, bin_client, bin_media, bin_audit, bin_provision.
demo_build() {
  step setup "packages (scripts/setup) and build (scripts/build, into ${build#$root/})"
  if [[ ${KMS_DEMO_SKIP_BUILD:-0} != 1 ]]; then
    "$root/scripts/setup"
    local build_log
    build_log=$(mktemp /tmp/kms-demo-build.XXXXXX)
    if ! "$root/scripts/build" >"$build_log" 2>&1; then
      tail -n 30 "$build_log" >&2
      fail "scripts/build failed (full log: $build_log)"
    fi
    rm -f "$build_log"
    info "built"
  fi
  bin_kmsd=$build/kms/server/kmsd
  bin_client=$build/kms/tools/kms-client
  bin_media=$build/kms/tools/kms-media
  bin_audit=$build/kms/tools/kms-audit
  bin_provision=$build/provisioning/kms-provision
  local b
  for b in "$bin_kmsd" "$bin_client" "$bin_media" "$bin_audit" "$bin_provision"; do
    [[ -x $b ]] || fail "missing binary $b"
  done
}

# demo_softhsm_token DIR LABEL: a fresh SoftHSM token with fresh PINs in DIR/user.pin and
# DIR/so.pin (mode 0600); its configuration is DIR/softhsm2.conf (the caller exports
# SOFTHSM2_CONF for the processes that use it).
demo_softhsm_token() {
  local dir=$1 label=$2
  mkdir -p "$dir/objects"
  cat > "$dir/softhsm2.conf" <<CONF
directories.tokendir = $dir/objects
objectstore.backend = file
log.level = ERROR
slots.removable = false
CONF
  (
    umask 077
    openssl rand -hex 16 > "$dir/user.pin"
    openssl rand -hex 16 > "$dir/so.pin"
  )
  SOFTHSM2_CONF=$dir/softhsm2.conf softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$dir/so.pin")" --pin "$(cat "$dir/user.pin")" >/dev/null
  info "$(SOFTHSM2_CONF=$dir/softhsm2.conf softhsm2-util --show-slots |
    grep -m1 -E "Label: +$label" | sed 's/^ *//')"
}

# The demo PKI in pki/: a server CA and kmsd's certificate (SAN localhost, 127.0.0.1), a
# bridge CA and the bridge's client certificate (SAN URI $BRIDGE).
demo_pki() {
  step setup "demo PKI (openssl): a server CA for kmsd's certificate, a bridge CA for client certificates"
  mkdir -p pki
  pki() { openssl "$@" 2>/dev/null; }
  pki req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=KMS demo server CA" -keyout pki/server-ca.key -out pki/server-ca.crt
  pki req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=KMS demo bridge CA" -keyout pki/bridge-ca.key -out pki/bridge-ca.crt
  pki req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kms.ims.example.net" \
    -keyout pki/server.key -out pki/server.csr
  cat > pki/server.ext <<EXT
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:kms.ims.example.net, IP:127.0.0.1
EXT
  pki x509 -req -in pki/server.csr -CA pki/server-ca.crt -CAkey pki/server-ca.key \
    -CAcreateserial -days 30 -extfile pki/server.ext -out pki/server.crt
  pki req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=bridge1" \
    -keyout pki/bridge1.key -out pki/bridge1.csr
  cat > pki/bridge1.ext <<EXT
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:$BRIDGE
EXT
  pki x509 -req -in pki/bridge1.csr -CA pki/bridge-ca.crt -CAkey pki/bridge-ca.key \
    -CAcreateserial -days 30 -extfile pki/bridge1.ext -out pki/bridge1.crt
  info "kmsd: $(openssl x509 -in pki/server.crt -noout -subject) (SAN localhost, 127.0.0.1)"
  info "bridge: $(openssl x509 -in pki/bridge1.crt -noout -subject), SAN URI $BRIDGE"
}

# demo_provision CONFIG: the key ceremony (transport key, KMS keys generated in the token,
# the SIM vendor's personalisation key) and steps 1a-1d (subscribers and the bridge), with
# kms-provision on CONFIG's token and database; sets $profile.
demo_provision() {
  local config=$1
  current=1a-1c
  step 0 "key ceremony: transport key from the ceremony file; KMS keys generated in the token (kms-provision init)"
  mkdir -p ceremony && (umask 077 && openssl rand -hex 32 > ceremony/transport.key)
  "$bin_provision" --config "$config" init --transport-key-file ceremony/transport.key | sed 's/^/        /'
  demo_personalisation_key
  demo_import_personalisation_key "$config"
  demo_subscribers "$config"
}

# The SIM vendor's personalisation key P, wrapped by the vendor under the transport key
# (RFC 5649) in ceremony/personalisation.wrapped; subscriber keys leave a token only under P.
demo_personalisation_key() {
  (umask 077 && openssl rand -hex 32 > ceremony/personalisation.key)
  printf '%b' "$(sed 's/../\\x&/g' ceremony/personalisation.key)" | openssl enc -id-aes256-wrap-pad \
    -K "$(cat ceremony/transport.key)" -iv A65959A6 -out ceremony/personalisation.wrapped
}

# demo_import_personalisation_key CONFIG: P into CONFIG's token, unwrapped under its transport key.
demo_import_personalisation_key() {
  "$bin_provision" --config "$1" personalisation-key import --label sim-vendor \
    --wrapped ceremony/personalisation.wrapped | sed 's/^/        /'
}

# demo_subscribers CONFIG: steps 1a-1d through CONFIG's token into its database; sets $profile.
demo_subscribers() {
  local config=$1
  provision() { "$bin_provision" --config "$config" "$@"; }
  mkdir -p ue bridge
  step 1a "UE-A bootstraps with the KMS: shared key Ka for $A (exported wrapped under the personalisation key)"
  provision subscriber add "$A" --personalisation-key sim-vendor --out ue/alice.key 2>/dev/null | sed 's/^/        /'
  step 1b "UE-B bootstraps with the KMS: shared key Kb for $B"
  provision subscriber add "$B" --personalisation-key sim-vendor --out ue/bob.key 2>/dev/null | sed 's/^/        /'
  step 1c "UE-C bootstraps with the KMS: shared key Kc for $C"
  provision subscriber add "$C" --personalisation-key sim-vendor --out ue/carol.key 2>/dev/null | sed 's/^/        /'
  step 1d "the conference bridge: bridge key for $BRIDGE"
  provision bridge add "$BRIDGE" --personalisation-key sim-vendor --out bridge/bridge1.key 2>/dev/null | sed 's/^/        /'
  profile=$(provision --json status | sed -n 's/.*"profile":"\([a-z0-9-]*\)".*/\1/p' | head -1)
  profile=${profile:-aes-ecb-sha256}
  info "token profile: $profile"
}

# demo_start_kmsd CONFIG LOG LISTEN PORTFILE: starts kmsd in the background (the caller's
# environment names the token), waits until it listens; sets $started_pid and $started_url.
demo_start_kmsd() {
  local config=$1 log=$2 listen=$3 port_file=$4
  rm -f "$port_file"
  "$bin_kmsd" --config "$config" --listen "$listen" --port-file "$port_file" 2>"$log" &
  started_pid=$!
  local _
  for _ in $(seq 1 100); do
    [[ -s $port_file ]] && break
    kill -0 "$started_pid" 2>/dev/null || fail "kmsd ($config) exited at start: $(tail -n 5 "$log")"
    sleep 0.1
  done
  [[ -s $port_file ]] || fail "kmsd ($config) did not start listening"
  started_url=https://127.0.0.1:$(cat "$port_file")
}

# demo_conference TAG B_SERVER C_SERVER BRIDGE_SERVER: one conference, steps 2-15 and
# Figure 20: UE-B's key request to B_SERVER, UE-C's to C_SERVER (at the same time), the
# bridge's fetch from BRIDGE_SERVER; files in sip/TAG, ue/TAG, bridge/TAG. Sets $conference.
demo_conference() {
  local tag=$1 b_server=$2 c_server=$3 bridge_server=$4
  local sip=sip/$tag ue=ue/$tag out=bridge/$tag
  mkdir -p "$sip" "$ue" "$out"
  local p=ceremony/personalisation.key
  current=2a
  step 2a "UE-A generates a random R_A for the conference (kept in $ue/alice.state)"
  "$bin_client" ue invite --id "$A" --key-file ue/alice.key --personalisation-key-file $p --state "$ue/alice.state" \
    --invitee "$B" --out "$sip/invite-bob.ea" --profile "$profile" 2>/dev/null
  current=2
  step 2 "UE-A -> IMS: INVITE to UE-B with ID-A, ID-B, E_A(R_A, ID-A, ID-B) ($(wc -c <"$sip/invite-bob.ea") bytes base64url)"
  current=9
  "$bin_client" ue invite --id "$A" --key-file ue/alice.key --personalisation-key-file $p --state "$ue/alice.state" \
    --invitee "$C" --out "$sip/invite-carol.ea" --profile "$profile" 2>/dev/null
  step 9 "UE-A -> IMS: INVITE to UE-C with ID-A, ID-C, E_A(R_A, ID-A, ID-C) (same R_A; B and C are invited at once)"
  step "3, 10" "the IMS network forwards the INVITEs to UE-B and UE-C (the demo relays the files)"

  current="4-7, 11-14"
  step "4a,11a" "UE-B generates R_B, UE-C generates R_C"
  step "4, 11" "UE-B sends its key request to $b_server, UE-C to $c_server, at the same time (POST /v1/key-request)"
  "$bin_client" ue request --id "$B" --key-file ue/bob.key --personalisation-key-file $p --chair "$A" \
    --chair-envelope "$sip/invite-bob.ea" --out-relay "$sip/relay-from-bob.json" \
    --out-key "$ue/bob.media.json" --server "$b_server" --ca pki/server-ca.crt --profile "$profile" \
    >"$sip/request-bob.out" 2>&1 &
  local req_b=$!
  "$bin_client" ue request --id "$C" --key-file ue/carol.key --personalisation-key-file $p --chair "$A" \
    --chair-envelope "$sip/invite-carol.ea" --out-relay "$sip/relay-from-carol.json" \
    --out-key "$ue/carol.media.json" --server "$c_server" --ca pki/server-ca.crt --profile "$profile" \
    >"$sip/request-carol.out" 2>&1 &
  local req_c=$!
  wait "$req_b" || fail "UE-B's key request: $(cat "$sip/request-bob.out")"
  wait "$req_c" || fail "UE-C's key request: $(cat "$sip/request-carol.out")"
  step "5-6, 12-13" "the KMS decrypted both envelopes in the token, checked the IDs, admitted B and C, derived K1, K2, K3 and wrapped them"
  conference=$(sed -n 's/^conference \([^ ]*\).*/\1/p' "$sip/request-bob.out")
  local conference_c
  conference_c=$(sed -n 's/^conference \([^ ]*\).*/\1/p' "$sip/request-carol.out")
  [[ -n $conference && $conference == "$conference_c" ]] || fail "B and C got different conferences"
  info "conference id $conference"
  step 7 "UE-B opens E_B(R_B, K2) and keeps K2; relays E_A(R_A, K1) to the IMS network"
  info "$(sed 's/^conference [^ ]* //' "$sip/request-bob.out")"
  step 14 "UE-C opens E_C(R_C, K3) and keeps K3; relays E_A(R_A, K1)"
  info "$(sed 's/^conference [^ ]* //' "$sip/request-carol.out")"

  current="8, 15"
  step 8 "UE-A opens E_A(R_A, K1) from UE-B's response"
  "$bin_client" ue open --id "$A" --key-file ue/alice.key --personalisation-key-file $p --state "$ue/alice.state" \
    --relay "$sip/relay-from-bob.json" --out-key "$ue/alice.media.json" --profile "$profile" | sed 's/^/        /'
  step 15 "UE-A opens E_A(R_A, K1) from UE-C's response: the same K1"
  "$bin_client" ue open --id "$A" --key-file ue/alice.key --personalisation-key-file $p --state "$ue/alice.state" \
    --relay "$sip/relay-from-carol.json" --out-key "$ue/alice.media-via-carol.json" --profile "$profile" | sed 's/^/        /'
  cmp -s "$ue/alice.media.json" "$ue/alice.media-via-carol.json" || fail "K1 from B's and C's requests differ"
  info "K1 via UE-B == K1 via UE-C"

  current="Figure 20"
  step "Fig. 20" "the bridge fetches the conference's keys from $bridge_server over mutual TLS (POST /v1/bridge/keys)"
  "$bin_client" bridge fetch --id "$BRIDGE" --key-file bridge/bridge1.key --personalisation-key-file $p --conference "$conference" \
    --out "$out/keys.json" --cert pki/bridge1.crt --cert-key pki/bridge1.key \
    --server "$bridge_server" --ca pki/server-ca.crt --profile "$profile" | sed 's/^/        /'
  step check "every party's key equals the bridge's copy, and K1, K2, K3 all differ"
  "$bin_client" check-keys --bridge-keys "$out/keys.json" "$ue/alice.media.json" "$ue/bob.media.json" \
    "$ue/carol.media.json" | sed 's/^/        /'
  "$bin_client" check-keys --bridge-keys "$out/keys.json" "$ue/alice.media.json" "$ue/bob.media.json" \
    "$ue/carol.media.json" >/dev/null || fail "a party's key differs from the bridge's"
}

# demo_media TAG: real SRTP media A -> bridge -> B, C with the keys of conference TAG.
demo_media() {
  local tag=$1
  local ue=ue/$tag keys=bridge/$tag/keys.json media=media/$tag
  mkdir -p "$media"
  current=media
  local packets=50 text="conference media from UE-A"
  step M1 "UE-B and UE-C listen for SRTP (UDP loopback), the bridge relays with per-member keys"
  "$bin_media" receive --key-file "$ue/bob.media.json" --port-file "$media/bob.port" --packets $packets \
    --expect "$text" >"$media/bob.out" 2>&1 &
  local rb=$!; media_pids+=($rb)
  "$bin_media" receive --key-file "$ue/carol.media.json" --port-file "$media/carol.port" --packets $packets \
    --expect "$text" >"$media/carol.out" 2>&1 &
  local rc=$!; media_pids+=($rc)
  local f _
  for f in "$media/bob.port" "$media/carol.port"; do
    for _ in $(seq 1 50); do [[ -s $f ]] && break; sleep 0.1; done
  done
  "$bin_media" relay --bridge-keys "$keys" --from "$A" \
    --to "$B=127.0.0.1:$(cat "$media/bob.port")" --to "$C=127.0.0.1:$(cat "$media/carol.port")" \
    --port-file "$media/bridge.port" --packets $packets >"$media/bridge.out" 2>&1 &
  local rr=$!; media_pids+=($rr)
  for _ in $(seq 1 50); do [[ -s $media/bridge.port ]] && break; sleep 0.1; done
  step M2 "UE-A sends $packets RTP packets protected with SRTP (AES_CM_128_HMAC_SHA1_80, key K1) to the bridge"
  "$bin_media" send --key-file "$ue/alice.media.json" --to "127.0.0.1:$(cat "$media/bridge.port")" \
    --packets $packets --text "$text" | sed 's/^/        /'
  wait "$rr" || fail "bridge relay: $(cat "$media/bridge.out")"
  info "$(cat "$media/bridge.out")"
  step M3 "UE-B (K2) and UE-C (K3) decrypt and check the payload"
  wait "$rb" || fail "UE-B media: $(cat "$media/bob.out")"
  wait "$rc" || fail "UE-C media: $(cat "$media/carol.out")"
  info "$(cat "$media/bob.out")"
  info "$(cat "$media/carol.out")"
  media_pids=()
}
