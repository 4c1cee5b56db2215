#include "tokens/key_templates.h"

#include "hsm/error.h"
#include "hsm/mechanism.h"

namespace tokens {
namespace {

hsm::Bytes bytes_of(std::string_view text) { return hsm::Bytes(text.begin(), text.end()); }

enum Purpose : unsigned {
  kEncrypt = 1,
  kDecrypt = 2,
  kDerive = 4,
  kWrap = 8,
  kUnwrap = 16,
};

// Every usage flag is set explicitly (TRUE for the purpose, FALSE otherwise): token
// defaults differ, and SoftHSM/NSS do not inherit them from a base key.
hsm::AttributeTemplate secret_key(CK_KEY_TYPE key_type, unsigned purposes, bool token_object,
                                  bool extractable) {
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, key_type)
      .set_bool(CKA_TOKEN, token_object)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, extractable)
      .set_bool(CKA_ENCRYPT, (purposes & kEncrypt) != 0)
      .set_bool(CKA_DECRYPT, (purposes & kDecrypt) != 0)
      .set_bool(CKA_DERIVE, (purposes & kDerive) != 0)
      .set_bool(CKA_WRAP, (purposes & kWrap) != 0)
      .set_bool(CKA_UNWRAP, (purposes & kUnwrap) != 0)
      .set_bool(CKA_SIGN, false)
      .set_bool(CKA_VERIFY, false);
  return t;
}

void name(hsm::AttributeTemplate& t, std::string_view label) {
  t.set_string(CKA_LABEL, label).set_bytes(CKA_ID, bytes_of(label));
}

// Long-term keys: their attributes can never change (CKA_MODIFIABLE=FALSE), and they cannot
// be copied into an object with other attributes (CKA_COPYABLE=FALSE, where the token
// supports it: docs/ARCHITECTURE.md "Key custody"). Called last: CKA_MODIFIABLE ends the
// template, because SoftHSM 2.6.1 applies an unwrap template in order and refuses every
// attribute after CKA_MODIFIABLE=FALSE (CKR_ATTRIBUTE_READ_ONLY).
void fixed(hsm::AttributeTemplate& t, const TokenQuirks& quirks) {
  if (quirks.supports_copyable) t.set_bool(CKA_COPYABLE, false);
  t.set_bool(CKA_MODIFIABLE, false).move_to_end(CKA_MODIFIABLE);
}

hsm::AttributeTemplate kms_token_key(const TokenProfile& profile, unsigned purposes,
                                     std::string_view label) {
  hsm::AttributeTemplate t = secret_key(CKK_AES, purposes, true, false);
  name(t, label);
  fixed(t, profile.quirks);
  return t;
}

// What every key unwrapped under the storage or transport key must be: a sensitive AES key
// with fixed attributes that cannot encrypt, decrypt, unwrap, sign or verify.
hsm::AttributeTemplate unwrapped_key_rules() {
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_ENCRYPT, false)
      .set_bool(CKA_DECRYPT, false)
      .set_bool(CKA_UNWRAP, false)
      .set_bool(CKA_SIGN, false)
      .set_bool(CKA_VERIFY, false);
  return t;
}

// What the storage and personalisation keys may wrap: root keys (AES, CKA_DERIVE only).
hsm::AttributeTemplate root_key_shape() {
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_DERIVE, true)
      .set_bool(CKA_ENCRYPT, false)
      .set_bool(CKA_DECRYPT, false)
      .set_bool(CKA_WRAP, false)
      .set_bool(CKA_UNWRAP, false);
  return t;
}

hsm::KeyRef ref(std::string label) {
  hsm::KeyRef r;
  r.id = bytes_of(label);
  r.label = std::move(label);
  return r;
}

}  // namespace

hsm::KeyRef master_key_ref() { return ref(std::string(kMasterKeyLabel)); }
hsm::KeyRef storage_key_ref() { return ref(std::string(kStorageKeyLabel)); }
hsm::KeyRef transport_key_ref() { return ref(std::string(kTransportKeyLabel)); }
hsm::KeyRef personalisation_key_ref(std::string_view name) {
  return ref(std::string(kPersonalisationKeyPrefix) + std::string(name));
}

std::string root_key_label(IdentityKind kind, std::string_view identity, std::uint32_t version) {
  return "kms/" + std::string(kind_name(kind)) + "/" + std::string(identity) + "/v" +
         std::to_string(version);
}

hsm::KeyRef root_key_ref(IdentityKind kind, std::string_view identity, std::uint32_t version) {
  return ref(root_key_label(kind, identity, version));
}

namespace templates {

hsm::AttributeTemplate master_key(const TokenProfile& profile) {
  hsm::AttributeTemplate t = kms_token_key(profile, kDerive, kMasterKeyLabel);
  if (profile.extractable_base_for_extractable_children) {
    t.set_bool(CKA_EXTRACTABLE, true).set_bool(CKA_WRAP_WITH_TRUSTED, true);
  }
  t.move_to_end(CKA_MODIFIABLE);
  return t;
}

hsm::AttributeTemplate storage_unwrap_template(const TokenProfile& profile) {
  // A stored root key comes out as the KMS uses it: CKA_DERIVE only, never extractable.
  hsm::AttributeTemplate t = unwrapped_key_rules();
  t.set_bool(CKA_EXTRACTABLE, false).set_bool(CKA_DERIVE, true).set_bool(CKA_WRAP, false);
  fixed(t, profile.quirks);
  return t;
}

hsm::AttributeTemplate transport_unwrap_template(const TokenProfile& profile) {
  // Root keys in transit (extractable, CKA_DERIVE) and personalisation keys (not
  // extractable, CKA_WRAP) both arrive under the transport key: extractability and those
  // two flags cannot be forced.
  hsm::AttributeTemplate t = unwrapped_key_rules();
  fixed(t, profile.quirks);
  return t;
}

hsm::AttributeTemplate root_key_wrap_template() { return root_key_shape(); }

hsm::AttributeTemplate storage_key(const TokenProfile& profile) {
  hsm::AttributeTemplate t = kms_token_key(profile, kWrap | kUnwrap, kStorageKeyLabel);
  if (profile.quirks.supports_wrap_templates) {
    t.set_template(CKA_UNWRAP_TEMPLATE, storage_unwrap_template(profile))
        .set_template(CKA_WRAP_TEMPLATE, root_key_wrap_template());
  }
  t.move_to_end(CKA_MODIFIABLE);
  return t;
}

hsm::AttributeTemplate transport_key(const TokenProfile& profile) {
  hsm::AttributeTemplate t = kms_token_key(profile, kUnwrap, kTransportKeyLabel);
  if (profile.quirks.supports_wrap_templates) {
    t.set_template(CKA_UNWRAP_TEMPLATE, transport_unwrap_template(profile));
  }
  t.move_to_end(CKA_MODIFIABLE);
  return t;
}

hsm::AttributeTemplate personalisation_key(const TokenProfile& profile, std::string_view key_name) {
  hsm::AttributeTemplate t = kms_token_key(profile, kWrap, personalisation_key_ref(key_name).label);
  if (profile.quirks.supports_wrap_templates) {
    t.set_template(CKA_WRAP_TEMPLATE, root_key_wrap_template());
  }
  t.move_to_end(CKA_MODIFIABLE);
  return t;
}

hsm::AttributeTemplate root_key(const TokenProfile& profile, IdentityKind kind,
                                std::string_view identity, std::uint32_t version,
                                bool token_object) {
  hsm::AttributeTemplate t = secret_key(CKK_AES, kDerive, token_object, false);
  if (token_object) name(t, root_key_label(kind, identity, version));
  // The key store's session copy (unwrapped from the database) is public like the working
  // keys below, and for the same reason: CKA_PRIVATE restricts nobody on kmsd's sessions,
  // and SoftHSM would encrypt its value at the unwrap and decrypt it at each derive.
  if (!token_object) t.set_bool(CKA_PRIVATE, false);
  fixed(t, profile.quirks);
  return t;
}

// Public like the key store's unwrapped root key (above) and for the same reason: a session
// object of kms-provision's or kmsd's logged-in sessions for the few calls between its
// unwrap (or generation) and its wrap; private, SoftHSM would encrypt its value at the
// unwrap and decrypt it at the wrap (bulk import: about 5 % of the rate).
hsm::AttributeTemplate root_key_in_transit(const TokenProfile& profile) {
  hsm::AttributeTemplate t = secret_key(CKK_AES, kDerive, false, true);
  t.set_bool(CKA_PRIVATE, false);
  fixed(t, profile.quirks);
  return t;
}

// The keys a key request works with (KE, KR, W, BW, the media keys): session objects with
// CKA_PRIVATE=FALSE. Session objects are visible to kmsd's own sessions only, all of them
// logged in for kmsd's whole life, so CKA_PRIVATE restricts nobody; what it costs is
// SoftHSM's: a private object's value is kept encrypted under the token's in-memory key and
// decrypted on every use (kmsd's call sequence: 1.7x the requests/s on SoftHSM 2.6.1
// without it). Sensitivity and extractability are unchanged (docs/ARCHITECTURE.md "Key
// hierarchy"). Long-term keys and root keys in the token stay private.
namespace {
hsm::AttributeTemplate working_key(CK_KEY_TYPE key_type, unsigned purposes, bool extractable) {
  hsm::AttributeTemplate t = secret_key(key_type, purposes, false, extractable);
  t.set_bool(CKA_PRIVATE, false);
  return t;
}
}  // namespace

hsm::AttributeTemplate envelope_key() { return working_key(CKK_AES, kDecrypt, false); }
hsm::AttributeTemplate response_key() { return working_key(CKK_AES, kDerive, false); }
hsm::AttributeTemplate response_wrap_key() { return working_key(CKK_AES, kWrap, false); }
hsm::AttributeTemplate bridge_wrap_key() { return working_key(CKK_AES, kWrap, false); }

hsm::AttributeTemplate media_key() {
  // A generic secret has no cipher use at all; the one thing it can do is be wrapped.
  return working_key(CKK_GENERIC_SECRET, 0, true);
}

hsm::AttributeTemplate extractable_session_aes_key(TransitUse use) {
  const bool derive = use == TransitUse::derive;
  hsm::AttributeTemplate t;
  t.set_ulong(CKA_CLASS, CKO_SECRET_KEY)
      .set_ulong(CKA_KEY_TYPE, CKK_AES)
      .set_bool(CKA_TOKEN, false)
      .set_bool(CKA_PRIVATE, true)
      .set_bool(CKA_SENSITIVE, true)
      .set_bool(CKA_EXTRACTABLE, true)
      .set_bool(CKA_ENCRYPT, false)
      .set_bool(CKA_DECRYPT, false)
      .set_bool(CKA_DERIVE, derive)
      .set_bool(CKA_WRAP, !derive)
      .set_bool(CKA_UNWRAP, !derive)
      .set_bool(CKA_SIGN, false)
      .set_bool(CKA_VERIFY, false);
  return t;
}

}  // namespace templates

CK_OBJECT_HANDLE generate_aes_key(hsm::Session& session, hsm::AttributeTemplate attributes) {
  attributes.set_ulong(CKA_VALUE_LEN, 32).move_to_end(CKA_MODIFIABLE);  // see fixed()
  hsm::Mechanism mechanism(CKM_AES_KEY_GEN);
  return session.generate_key(mechanism, std::move(attributes));
}

CK_OBJECT_HANDLE unwrap_aes_key(hsm::Session& session, const TokenProfile& profile,
                                CK_OBJECT_HANDLE unwrapping_key, hsm::ByteView wrapped,
                                hsm::AttributeTemplate attributes) {
  if (wrapped.size() != 40) {
    throw hsm::Error(
        CKR_WRAPPED_KEY_LEN_RANGE, "unwrap_aes_key",
        "an RFC 5649-wrapped AES-256 key is 40 bytes, got " + std::to_string(wrapped.size()));
  }
  hsm::Mechanism mechanism(profile.wrap_mechanism);
  attributes.move_to_end(CKA_MODIFIABLE);  // see fixed(): SoftHSM applies the template in order
  return session.unwrap_key(mechanism, unwrapping_key, wrapped, std::move(attributes));
}

}  // namespace tokens
