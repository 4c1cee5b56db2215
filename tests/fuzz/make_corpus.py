#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ from docs/PROTOCOL.md's test
vectors and the documented examples (docs/SERVER.md bodies, docs/OPERATIONS.md bulk files,
config/kmsd.example.toml, an audit chain in the log's own format). Deterministic: running it
again rewrites the same files. Usage: tests/fuzz/make_corpus.py [--help]"""
import base64
import hashlib
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fuzz" / "corpus"


def vectors(profile):
    """name -> bytes of the ```text block under '### Profile <profile>'."""
    doc = (ROOT / "docs" / "PROTOCOL.md").read_text()
    section = doc.split(f"### Profile {profile} ", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    return {m[1]: bytes.fromhex(m[2]) for m in re.finditer(r"^(\w+)\s+=\s+([0-9a-f]+)$", section, re.M)}


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def counting(first, count):
    return bytes((first + i) & 0xFF for i in range(count))


def lp(data):
    return len(data).to_bytes(2, "big") + data


def write(target, name, data):
    folder = OUT / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def dumps(value):
    return json.dumps(value, separators=(", ", ": "))


CHAIR, BOB, CAROL, BRIDGE = ("sip:alice@ims.example.net", "sip:bob@ims.example.net",
                             "tel:+15551234567", "sip:bridge1@conf.example.net")


def protocol_seeds():
    for profile in (1, 2):
        v = vectors(profile)
        for name in ("E_A_for_B", "E_B", "response_A_for_B", "response_B"):
            write("fuzz_envelope_codec", f"p{profile}_{name}", v[name])
        for name in ("response_A_for_B", "response_B"):
            write("fuzz_response_opener", f"p{profile}_{name}", v[name])
        write("fuzz_key_request_json", f"p{profile}_key_request", dumps({
            "chair_id": CHAIR, "responder_id": BOB,
            "chair_envelope": b64u(v["E_A_for_B"]), "responder_envelope": b64u(v["E_B"])}))
        write("fuzz_key_request_json", f"p{profile}_key_response", dumps({
            "conference_id": b64u(v["conf_id"]), "chair_response": b64u(v["response_A_for_B"]),
            "responder_response": b64u(v["response_B"])}))
        items = [(CHAIR, 1, "A"), (BOB, 2, "B"), (CAROL, 2, "C")]
        write("fuzz_bridge_json", f"p{profile}_release", dumps({
            "conference_id": b64u(v["conf_id"]), "profile": profile, "expires_at": 1767312005,
            "bridge_key_version": 1,
            "keys": [{"member_id": member, "role": role, "key_id": b64u(v[f"key_id_{n}"]),
                      "suite": 1, "wrapped": b64u(v[f"bridge_wrapped_{n}"])}
                     for member, role, n in items]}))
    v = vectors(1)
    # The plaintext of E_A_for_B: R_A || lp(ID-A) || lp(ID-B).
    write("fuzz_envelope_codec", "plaintext_A_for_B",
          counting(0xA0, 32) + lp(CHAIR.encode()) + lp(BOB.encode()))
    write("fuzz_key_request_json", "error", dumps({"error": "replay",
                                                   "detail": "envelope already used"}))
    write("fuzz_bridge_json", "request", dumps({"conference_id": b64u(v["conf_id"])}))
    write("fuzz_bridge_json", "request_with_version",
          dumps({"conference_id": b64u(v["conf_id"]), "bridge_key_version": 1}))


def config_seeds():
    write("fuzz_config", "kmsd.example.toml", (ROOT / "config" / "kmsd.example.toml").read_text())
    write("fuzz_config", "minimal.toml", "\n".join([
        "[server]", 'listen = "127.0.0.1:0"', 'tls_cert = "server.pem"',
        'tls_key = "server.key"', 'bridge_ca = "bridge-ca.pem"', "",
        "[token]", 'module = "/usr/lib/softhsm/libsofthsm2.so"', 'token_label = "kms"',
        'pin_file = "pin"', "", "[database]", 'path = "kms.db"', ""]))


def bulk_seeds():
    wrapped = "6f0b" + "00" * 38 + "e1"
    # First byte: even = CSV, odd = JSON (fuzz_bulk_file.cpp).
    write("fuzz_bulk_file", "csv", "\x00identity,wrapped_key\n# a comment\n\n"
          f"{CHAIR},{wrapped}\r\n\"tel:+12015550123\",\"base64:q1s=\"\n")
    write("fuzz_bulk_file", "json_array", "\x01" + dumps(
        [{"identity": CHAIR, "wrapped_key": wrapped},
         {"identity": "tel:+12015550123", "wrapped_key": "base64:q1s="}]))
    write("fuzz_bulk_file", "json_lines", "\x01" + dumps({"identity": CHAIR, "wrapped_key": wrapped})
          + "\n\n" + dumps({"identity": BOB, "wrapped_key": "hex:" + wrapped}) + "\n")


def audit_line(seq, prev, event, outcome, fields):
    """The log's line format (kms/audit/src/audit_record.cpp format_record)."""
    compact = lambda value: json.dumps(value, separators=(",", ":"), sort_keys=True)
    line = (f'{{"seq":{seq},"time":"2026-11-30T10:52:0{seq}.880Z","prev":"{prev}",'
            f'"event":{compact(event)},"outcome":{compact(outcome)},"fields":{compact(fields)}')
    digest = hashlib.sha256(line.encode()).hexdigest()
    return line + ',"hash":"' + digest + '"}', digest


def audit_seeds():
    prev, lines = "0" * 64, []
    for seq, (event, outcome, fields) in enumerate([
            ("startup", "ok", {"version": "0.1.0"}),
            ("admission", "ok", {"chair": CHAIR, "member": BOB, "peer": "127.0.0.1:39448"}),
            ("refusal", "unknown_subscriber", {"chair": "sip:nobody@ims.example.net",
                                               "operation": "key_request"})], start=1):
        line, prev = audit_line(seq, prev, event, outcome, fields)
        lines.append(line + "\n")
    chain = "".join(lines)
    # First byte: bit 0 seal the lines, bit 1 anchor, bit 2 anchor at the genesis hash;
    # second byte: the anchor's seq (fuzz_audit_verify.cpp).
    write("fuzz_audit_verify", "chain", "\x00\x00" + chain)
    write("fuzz_audit_verify", "chain_anchored", "\x02\x03" + chain)
    write("fuzz_audit_verify", "sealed_anchored_torn", "\x03\x02" + chain[:-1])


def main():
    if len(sys.argv) > 1:
        print(__doc__)
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    protocol_seeds()
    config_seeds()
    bulk_seeds()
    audit_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
