#!/usr/bin/env bash
# The client-side programs (kms-client, kms-media) are built from what docs/ARCHITECTURE.md
# "Layers" gives the client side (kms_client, kms_wire, OpenSSL, Boost.JSON, libsrtp2) and
# never from the server's token stack (kms_core, kms_tokens, kms_hsm, p11-kit, SQLite).
# Two checks per binary: its link command (ninja -t commands), because the linker's
# --as-needed (GCC's default here, except in sanitizer builds) drops an unused library from
# the binary while the build graph still pulls it in; and what it loads (ldd).
# Usage: client_links_test.sh NINJA BUILD_DIR BINARY...
set -u
ninja=$1
build=$2
shift 2
status=0
for binary in "$@"; do
  name=$(basename "$binary")
  link=$("$ninja" -C "$build" -t commands "${binary#"$build"/}" | tail -n 1)
  # A link line that does not name kms_client is not one this test can judge.
  if ! grep -q 'libkms_client\.a' <<<"$link"; then
    echo "FAIL: $name: no link command naming libkms_client.a: $link"
    status=1
  fi
  if stack=$(grep -oE '[^ ]*(libkms_core|libkms_tokens|libkms_hsm|libp11-kit|libsqlite3)[^ ]*' \
    <<<"$link"); then
    echo "FAIL: $name is linked with the token stack:"
    echo "$stack"
    status=1
  fi
  if ! libraries=$(ldd "$binary"); then
    echo "FAIL: ldd $binary failed"
    exit 1
  fi
  if ! grep -q 'libcrypto' <<<"$libraries"; then
    echo "FAIL: $name: ldd lists no libcrypto:"
    echo "$libraries"
    status=1
  fi
  if stack=$(grep -E 'libp11-kit|libsqlite3' <<<"$libraries"); then
    echo "FAIL: $name loads the token stack:"
    echo "$stack"
    status=1
  fi
  [ $status -eq 0 ] && echo "ok: $name: linked and loaded without the token stack"
done
exit $status
