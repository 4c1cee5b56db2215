#include "token_steps.h"

#include "hsm/error.h"
#include "hsm/mechanism.h"
#include "tokens/kdf.h"
#include "tokens/key_templates.h"

namespace kms::token_steps {

hsm::ObjectGuard derive(hsm::Session& session, const tokens::TokenProfile& profile,
                        CK_OBJECT_HANDLE base, std::string_view label_name, hsm::ByteView context,
                        hsm::AttributeTemplate attributes) {
  const Bytes label = protocol::label(label_name);
  const CK_OBJECT_HANDLE handle =
      tokens::derive(session, profile, base, label, context, std::move(attributes));
  return hsm::ObjectGuard(session, handle);
}

MediaKey media_key(tokens::KeyStore& keys, hsm::Session& session,
                   const tokens::TokenProfile& profile, CK_OBJECT_HANDLE master,
                   std::string_view label_name, hsm::ByteView context) {
  tokens::DerivedKeyCache& cache = keys.derived_keys();
  if (!cache.enabled()) {
    return MediaKey(
        derive(session, profile, master, label_name, context, tokens::templates::media_key()));
  }
  return MediaKey(
      cache.get(tokens::DerivedKeyCache::name(label_name, context), [&](hsm::Session& pinned) {
        return derive(pinned, profile, master, label_name, context, tokens::templates::media_key())
            .release();
      }));
}

std::vector<CK_OBJECT_HANDLE> subscriber_keys(hsm::Session& session,
                                              const tokens::TokenProfile& profile,
                                              CK_OBJECT_HANDLE root_key,
                                              std::string_view identity) {
  std::vector<CK_OBJECT_HANDLE> keys(2);  // before the derives: nothing throws after them
  const Bytes context = protocol::subscriber_child_context(identity);
  hsm::ObjectGuard envelope_key =
      derive(session, profile, root_key, "envelope", context, tokens::templates::envelope_key());
  hsm::ObjectGuard response_key =
      derive(session, profile, root_key, "response", context, tokens::templates::response_key());
  keys[kEnvelopeKey] = envelope_key.release();
  keys[kResponseKey] = response_key.release();
  return keys;
}

hsm::SecureBytes open_envelope(hsm::Session& session, const tokens::TokenProfile& profile,
                               CK_OBJECT_HANDLE envelope_key, hsm::ByteView iv, hsm::ByteView aad,
                               hsm::ByteView sealed, std::string_view whose) {
  hsm::Mechanism mechanism = hsm::Mechanism::aes_gcm(iv, aad);
  try {
    return session.decrypt(mechanism, envelope_key, sealed);
  } catch (const hsm::Error& error) {
    // Tokens report a failed tag differently (SoftHSM CKR_GENERAL_ERROR, NSS
    // CKR_ENCRYPTED_DATA_INVALID): the token's quirks decide. Anything else, a device fault
    // included, stays an hsm::Error for the pool's recovery and a 503.
    if (error.kind() != hsm::ErrorKind::pkcs11 ||
        !tokens::is_integrity_failure(profile.quirks, error.rv())) {
      throw;
    }
    throw ProtocolError(ErrorCode::envelope_authentication_failed,
                        std::string(whose) + " envelope does not authenticate");
  }
}

Bytes wrap(hsm::Session& session, const tokens::TokenProfile& profile,
           CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key) {
  hsm::Mechanism mechanism(profile.wrap_mechanism);
  Bytes wrapped = session.wrap_key(mechanism, wrapping_key, key);
  if (wrapped.size() != protocol::kWrappedKeySize) {
    throw ProtocolError(ErrorCode::internal_error,
                        "token wrapped the key into " + std::to_string(wrapped.size()) +
                            " bytes, expected 40 (is the wrap mechanism RFC 5649?)");
  }
  return wrapped;
}

}  // namespace kms::token_steps
