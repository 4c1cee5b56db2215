#!/usr/bin/env python3
"""Independent oracle for the test vectors of docs/PROTOCOL.md.

Written from the text of PROTOCOL.md only (notation, profiles, key hierarchy, conf_id and
key ids, media keys, the KDF table, envelope, response and bridge release), not from the
C++ code, so that the vector check does not compare kms/client with itself. It recomputes
every value of the "## Test vectors" section for both profiles from the documented inputs
and compares it with the printed one.

Usage: protocol_oracle.py PROTOCOL.md            check the document (exit 1 on any problem)
       protocol_oracle.py --self-test PROTOCOL.md  check that the checker catches every
                                                  one-digit change, a dropped, added,
                                                  duplicated or truncated vector line

Needs Python 3 and the `cryptography` package (Debian 12: python3-cryptography 38.0.4);
uses only APIs present in cryptography 38. Exits 2 if the package is missing, so the
ctest entry fails instead of passing or skipping.
"""

import argparse
import hashlib
import re
import struct
import sys

try:
    from cryptography.hazmat.primitives import cmac
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding
except ImportError as error:  # fail, never skip: the oracle is a required check
    print(f"protocol_oracle: FAIL: the Python 'cryptography' package is missing ({error}); "
          "install python3-cryptography (scripts/setup)", file=sys.stderr)
    sys.exit(2)

# ---------------------------------------------------------------------------------------
# Notation ("## Notation")

def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def lp(x):
    """lp(x) = u16(len(x)) || x"""
    return u16(len(x)) + x


def L(name):
    """L(name) = ASCII of "IMS-CONF-KMS/1 " + name (note the space)."""
    return ("IMS-CONF-KMS/1 " + name).encode("ascii")


def sha256(data):
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------------------
# Profiles ("## Profiles"): KDF(key, label, context) -> 32 bytes

class KdfDisagreement(Exception):
    pass


def kdf_aes_ecb_sha256(key, label, context):
    """Profile 1: AES-256-ECB(key, SHA-256(label || 0x00 || context))."""
    digest = sha256(label + b"\x00" + context)
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(digest) + encryptor.finalize()


def cmac_aes(key, data):
    mac = cmac.CMAC(algorithms.AES(key))
    mac.update(data)
    return mac.finalize()


def kdf_sp800_108_cmac(key, label, context):
    """Profile 2: PRF(key, u32(1) || label || 0x00 || context || u32(256))
                 || PRF(key, u32(2) || label || 0x00 || context || u32(256)), PRF = CMAC-AES-256.
    Cross-checked on every call with cryptography's KBKDFCMAC (counter mode, 32-bit counter
    before the fixed data, fixed data = label || 0x00 || context || L, 32-bit L)."""
    fixed = label + b"\x00" + context + u32(256)
    documented = cmac_aes(key, u32(1) + fixed) + cmac_aes(key, u32(2) + fixed)
    library = KBKDFCMAC(algorithms.AES, Mode.CounterMode, 32, 4, 4,
                        CounterLocation.BeforeFixed, label, context, None).derive(key)
    if library != documented:
        raise KdfDisagreement("profile 2: cryptography's KBKDFCMAC disagrees with the "
                              "layout written in PROTOCOL.md")
    return documented


PROFILES = {
    1: ("aes-ecb-sha256", kdf_aes_ecb_sha256),
    2: ("sp800-108-cmac", kdf_sp800_108_cmac),
}


def wrap(kek, key):
    """RFC 5649 AES key wrap with padding; a 32-byte key wraps into 40 bytes."""
    wrapped = aes_key_wrap_with_padding(kek, key)
    assert len(wrapped) == 40, "RFC 5649 wrap of a 32-byte key must be 40 bytes"
    return wrapped


# ---------------------------------------------------------------------------------------
# Inputs ("## Test vectors", first paragraph)

def counting(first, count=32):
    return bytes((first + i) & 0xFF for i in range(count))


ID_A = b"sip:alice@ims.example.net"
ID_B = b"sip:bob@ims.example.net"
ID_C = b"tel:+15551234567"
ID_Y = b"sip:bridge1@conf.example.net"
K_A, K_B, K_C, M, BK_Y = (counting(0x00), counting(0x20), counting(0x40), counting(0x60),
                         counting(0x80))
R_A, R_B, R_C = counting(0xA0), counting(0xC0), counting(0xE0)
IV_A_FOR_B, IV_B, IV_A_FOR_C, IV_C = (counting(0x10, 12), counting(0x20, 12),
                                      counting(0x30, 12), counting(0x40, 12))
T = 1767225600
SUITE = 1
KEY_VERSION = 1

# The oracle's inputs as the document writes them: if the paragraph changes, the oracle
# must be changed with it (else it would check the values against inputs of its own).
INPUT_TEXT = [
    "ID-A = `sip:alice@ims.example.net`",
    "ID-B = `sip:bob@ims.example.net`",
    "ID-C = `tel:+15551234567`",
    "ID-Y = `sip:bridge1@conf.example.net`",
    "K_A = 00 01 .. 1f", "K_B = 20 .. 3f", "K_C = 40 .. 5f", "M = 60 .. 7f",
    "BK_Y = 80 .. 9f",
    "R_A = a0 .. bf", "R_B = c0 .. df", "R_C = e0 .. ff",
    "E_A for B 10 .. 1b", "E_B 20 .. 2b", "E_A for C 30 .. 3b", "E_C 40 .. 4b",
    "E_A for B T = 1767225600", "E_B T+1", "E_A for C T+2", "E_C T+3",
    "suite 1", "key_version 1",
]

# Message type bytes ("## Envelope", "## Response")
CHAIR_INVITE, RESPONDER_REQUEST = 0x01, 0x02
CHAIR_RESPONSE, RESPONDER_RESPONSE = 0x11, 0x12
# Bridge roles ("## Bridge key release")
ROLE_CHAIR, ROLE_MEMBER = 1, 2


def envelope(profile, msg_type, timestamp, iv, ke_sender, r, id_a, id_b):
    """"## Envelope": header [0, 28) || AES-256-GCM(KE_sender, IV, P, AAD) || tag."""
    header = (u8(1) + u8(msg_type) + u8(profile) + u8(SUITE) + u32(KEY_VERSION) +
              u64(timestamp) + iv)
    assert len(header) == 28
    plaintext = r + lp(id_a) + lp(id_b)
    aad = header + lp(id_a) + lp(id_b)
    out = header + AESGCM(ke_sender).encrypt(iv, plaintext, aad)
    assert len(out) == 28 + 32 + 2 + len(id_a) + 2 + len(id_b) + 16
    return out


def response(profile, msg_type, conf_id, key_id, w, k):
    """"## Response": 4-byte header || conf_id || key_id || u16(40) || RFC5649(W, K)."""
    out = (u8(1) + u8(msg_type) + u8(profile) + u8(SUITE) + conf_id + key_id + u16(40) +
           wrap(w, k))
    assert len(out) == 70
    return out


def compute_vectors(profile):
    """Every value of one profile's vector block, by name."""
    _, kdf = PROFILES[profile]
    v = {}
    # Key hierarchy: KE_X, KR_X from K_X with context lp(ID-X).
    for name, k, ident in (("A", K_A, ID_A), ("B", K_B, ID_B), ("C", K_C, ID_C)):
        v["KE_" + name] = kdf(k, L("envelope"), lp(ident))
        v["KR_" + name] = kdf(k, L("response"), lp(ident))

    # The flow: A invites B (E_A_for_B, E_B), then C (E_A_for_C, E_C): in the second
    # request C is the responder, i.e. ID-B = ID-C there.
    v["E_A_for_B"] = envelope(profile, CHAIR_INVITE, T, IV_A_FOR_B, v["KE_A"], R_A, ID_A, ID_B)
    v["E_B"] = envelope(profile, RESPONDER_REQUEST, T + 1, IV_B, v["KE_B"], R_B, ID_A, ID_B)
    v["E_A_for_C"] = envelope(profile, CHAIR_INVITE, T + 2, IV_A_FOR_C, v["KE_A"], R_A, ID_A,
                              ID_C)
    v["E_C"] = envelope(profile, RESPONDER_REQUEST, T + 3, IV_C, v["KE_C"], R_C, ID_A, ID_C)

    # Conference identifier and key ids (software, profile independent).
    conf_id = sha256(L("conference-id") + b"\x00" + lp(ID_A) + lp(R_A))[:16]
    v["conf_id"] = conf_id

    def key_id(member, r):
        return sha256(L("key-id") + b"\x00" + lp(conf_id) + lp(member) + lp(r))[:8]

    v["key_id_A"] = key_id(ID_A, R_A)
    v["key_id_B"] = key_id(ID_B, R_B)
    v["key_id_C"] = key_id(ID_C, R_C)

    # Media keys: K1 (chair), Kn for members; K2 is B's, K3 is C's.
    v["K1"] = kdf(M, L("media-chair"), lp(ID_A) + lp(R_A) + u8(SUITE))
    v["K2"] = kdf(M, L("media-member"), lp(conf_id) + lp(ID_B) + lp(R_B) + u8(SUITE))
    v["K3"] = kdf(M, L("media-member"), lp(conf_id) + lp(ID_C) + lp(R_C) + u8(SUITE))

    # Response wrap keys: W = KDF(KR_X, L("response-wrap"),
    #   u8(type) || lp(conf_id) || lp(ID-A) || lp(ID-B) || lp(R_X) || u8(suite)),
    # type = the response's type byte.
    def w(kr, msg_type, id_b, r):
        return kdf(kr, L("response-wrap"),
                   u8(msg_type) + lp(conf_id) + lp(ID_A) + lp(id_b) + lp(r) + u8(SUITE))

    v["W_A_for_B"] = w(v["KR_A"], CHAIR_RESPONSE, ID_B, R_A)
    v["W_B"] = w(v["KR_B"], RESPONDER_RESPONSE, ID_B, R_B)
    v["W_A_for_C"] = w(v["KR_A"], CHAIR_RESPONSE, ID_C, R_A)
    v["W_C"] = w(v["KR_C"], RESPONDER_RESPONSE, ID_C, R_C)

    v["response_A_for_B"] = response(profile, CHAIR_RESPONSE, conf_id, v["key_id_A"],
                                     v["W_A_for_B"], v["K1"])
    v["response_B"] = response(profile, RESPONDER_RESPONSE, conf_id, v["key_id_B"], v["W_B"],
                               v["K2"])
    v["response_A_for_C"] = response(profile, CHAIR_RESPONSE, conf_id, v["key_id_A"],
                                     v["W_A_for_C"], v["K1"])
    v["response_C"] = response(profile, RESPONDER_RESPONSE, conf_id, v["key_id_C"], v["W_C"],
                               v["K3"])

    # Bridge release to Y: items A (role 1), B, C (role 2), BW per item, RFC 5649(BW, K_N).
    for name, ident, role, k in (("A", ID_A, ROLE_CHAIR, v["K1"]),
                                 ("B", ID_B, ROLE_MEMBER, v["K2"]),
                                 ("C", ID_C, ROLE_MEMBER, v["K3"])):
        bw = kdf(BK_Y, L("bridge-wrap"), lp(ID_Y) + lp(conf_id) + lp(ident) + u8(role) +
                 v["key_id_" + name] + u8(SUITE))
        v["BW_" + name] = bw
        v["bridge_wrapped_" + name] = wrap(bw, k)
    return {name: value.hex() for name, value in v.items()}


# ---------------------------------------------------------------------------------------
# The document

VECTOR_LINE = re.compile(r"^([A-Za-z0-9_]+) += ([0-9a-f]+)$")
PROFILE_HEADING = re.compile(r"^### Profile (\d+) \(([^)]*)\)\s*$")


def parse_document(text):
    """Returns (vectors, problems): vectors[(profile, name)] = hex from the vector section;
    problems lists everything in the section the oracle cannot account for."""
    problems = []
    lines = text.splitlines()
    try:
        start = lines.index("## Test vectors")
    except ValueError:
        return {}, ["no '## Test vectors' section"]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    section = lines[start + 1:end]

    paragraph = " ".join(section)
    for fragment in INPUT_TEXT:
        if fragment not in paragraph:
            problems.append(f"inputs: the section no longer says {fragment!r}: update the "
                            "oracle's inputs together with the document")

    vectors = {}
    profile = None
    in_block = False
    for number, line in enumerate(section, start + 2):
        heading = PROFILE_HEADING.match(line)
        if heading and not in_block:
            profile = int(heading.group(1))
            if profile not in PROFILES:
                problems.append(f"line {number}: profile {profile} has no oracle")
            elif heading.group(2) != PROFILES[profile][0]:
                problems.append(f"line {number}: profile {profile} is named "
                                f"{heading.group(2)!r}, the profile table says "
                                f"{PROFILES[profile][0]!r}")
            continue
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        if not line.strip():
            continue
        match = VECTOR_LINE.match(line)
        if not match:
            problems.append(f"line {number}: not a 'name = lower-case hex' vector line: "
                            f"{line!r}")
            continue
        if profile not in PROFILES:
            problems.append(f"line {number}: vector {match.group(1)} outside a known "
                            "profile's block")
            continue
        key = (profile, match.group(1))
        if key in vectors:
            problems.append(f"line {number}: profile {profile} {match.group(1)} appears "
                            "twice")
        vectors[key] = match.group(2)
    if in_block:
        problems.append("unterminated code block in the vector section")

    # Notation example: L("envelope") = hex.
    notation = re.search(r'`L\("envelope"\)` = `([0-9a-f]+)`', text)
    if notation:
        vectors[(0, "L(envelope)")] = notation.group(1)
    else:
        problems.append("notation: the L(\"envelope\") example is missing")
    return vectors, problems


def compute_all():
    expected = {(0, "L(envelope)"): L("envelope").hex()}
    for profile in PROFILES:
        for name, value in compute_vectors(profile).items():
            expected[(profile, name)] = value
    return expected


def check(text, expected):
    """Returns (problems, checked): every mismatch, unknown or missing vector by name."""
    vectors, problems = parse_document(text)
    checked = 0
    for key, value in sorted(vectors.items()):
        profile, name = key
        where = f"profile {profile} {name}" if profile else name
        if key not in expected:
            problems.append(f"UNCHECKED {where}: the oracle does not compute this vector")
        elif expected[key] != value:
            problems.append(f"MISMATCH {where}: document {value}, oracle {expected[key]}")
        else:
            checked += 1
    for key in sorted(set(expected) - set(vectors)):
        profile, name = key
        problems.append(f"MISSING profile {profile} {name}: computed by the oracle but not "
                        "in the document")
    return problems, checked


def self_test(text, expected):
    """Every mutation of the vector section must be caught, naming the mutated vector."""
    problems, _ = check(text, expected)
    if problems:
        return ["the unmodified document does not pass:"] + problems
    failures = []
    lines = text.splitlines()
    vector_lines = []
    for index, line in enumerate(lines):
        match = VECTOR_LINE.match(line)
        if match:
            vector_lines.append((index, match))
    notation = re.search(r'`L\("envelope"\)` = `([0-9a-f]+)`', text)
    mutations = 0

    def expect_caught(mutated, token, what):
        nonlocal mutations
        mutations += 1
        found, _ = check(mutated, expected)
        if not any(token in p for p in found):
            failures.append(f"not caught: {what} (reported: {found})")

    for index, match in vector_lines:
        name, value = match.group(1), match.group(2)
        start = match.start(2)
        for position in sorted({0, len(value) // 2, len(value) - 1}):
            digit = value[position]
            other = "0123456789abcdef"[(int(digit, 16) + 1) % 16]
            changed = lines[:]
            changed[index] = (lines[index][:start + position] + other +
                              lines[index][start + position + 1:])
            expect_caught("\n".join(changed), f" {name}: document ",
                          f"{name} digit {position} {digit}->{other}")
        dropped = lines[:index] + lines[index + 1:]
        expect_caught("\n".join(dropped), f"MISSING profile", f"{name} line dropped")
        truncated = lines[:]
        truncated[index] = lines[index][:-1]
        expect_caught("\n".join(truncated), f" {name}: document ", f"{name} truncated")
        upper = lines[:]
        upper[index] = lines[index][:start] + value.upper() + "x"
        expect_caught("\n".join(upper), "not a 'name = lower-case hex'",
                      f"{name} not lower-case hex")
        twice = lines[:index + 1] + [lines[index]] + lines[index + 1:]
        expect_caught("\n".join(twice), "appears twice", f"{name} duplicated")
        added = lines[:index + 1] + [f"{name}_new = 00"] + lines[index + 1:]
        expect_caught("\n".join(added), f"UNCHECKED profile", f"new vector after {name}")
    if notation:
        value = notation.group(1)
        mutated = text[:notation.start(1)] + ("1" if value[0] != "1" else "2") + \
            text[notation.start(1) + 1:]
        expect_caught(mutated, "MISMATCH L(envelope)", "L(envelope) example")
    mutated = text.replace("R_B = c0 .. df", "R_B = c1 .. e0", 1)
    expect_caught(mutated, "inputs:", "changed input")
    mutated = text.replace("### Profile 2 (sp800-108-cmac)", "### Profile 3 (new)", 1)
    expect_caught(mutated, "profile 3 has no oracle", "unknown profile")
    profile_vectors = sum(1 for (profile, _) in expected if profile)
    if len(vector_lines) != profile_vectors:
        failures.append(f"mutated {len(vector_lines)} vector lines, expected {profile_vectors}")
    print(f"protocol_oracle: self-test: {mutations} mutations, {len(failures)} not caught")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true",
                        help="check that every mutation of the vectors is caught")
    parser.add_argument("protocol_md", help="path of docs/PROTOCOL.md")
    args = parser.parse_args()
    with open(args.protocol_md, encoding="utf-8") as f:
        text = f.read()
    try:
        expected = compute_all()
    except KdfDisagreement as error:
        print(f"protocol_oracle: FAIL: {error}", file=sys.stderr)
        return 1
    if args.self_test:
        failures = self_test(text, expected)
        for failure in failures:
            print(f"protocol_oracle: self-test: {failure}", file=sys.stderr)
        return 1 if failures else 0
    problems, checked = check(text, expected)
    for problem in problems:
        print(f"protocol_oracle: {problem}", file=sys.stderr)
    if problems:
        print(f"protocol_oracle: FAIL: {len(problems)} problem(s), {checked} vectors match",
              file=sys.stderr)
        return 1
    per_profile = {p: sum(1 for (q, _) in expected if q == p) for p in PROFILES}
    print(f"protocol_oracle: all {checked} vectors match (profile 1: {per_profile[1]}, "
          f"profile 2: {per_profile[2]}, notation: 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
