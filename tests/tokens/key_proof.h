// Proves that a key handle in the token holds a given value without reading it: derive
// KR = KDF(key, "response") and W = KDF(KR, "response-wrap") in the token, wrap a known key
// under W, and unwrap it in software with W computed from `value`.
#pragma once

#include "hsm/session.h"
#include "software_kdf.h"
#include "tokens/kdf.h"
#include "tokens/key_templates.h"
#include "tokens/token_context.h"

namespace testkdf {

inline bool key_holds(tokens::TokenContext& token, CK_OBJECT_HANDLE key, const Bytes& value) {
  const tokens::TokenProfile& profile = token.profile();
  const Bytes known = random_bytes(32);
  const Bytes context = to_bytes("proof");
  const Bytes wrapped = token.pool().run([&](hsm::Session& session) {
    hsm::ObjectGuard response(
        session, tokens::derive(session, profile, key, testkdf::label("response"), context,
                                tokens::templates::response_key()));
    hsm::ObjectGuard w(
        session, tokens::derive(session, profile, response.get(), testkdf::label("response-wrap"),
                                context, tokens::templates::response_wrap_key()));
    hsm::AttributeTemplate t = tokens::templates::media_key();
    t.set_bytes(CKA_VALUE, known);
    hsm::ObjectGuard payload(session, session.create_object(std::move(t)));
    hsm::Mechanism wrap(profile.wrap_mechanism);
    return session.wrap_key(wrap, w.get(), payload.get());
  });
  const Bytes kr = kdf(profile.id, value, testkdf::label("response"), context);
  const Bytes w = kdf(profile.id, kr, testkdf::label("response-wrap"), context);
  try {
    return unwrap_pad(w, wrapped) == known;
  } catch (const std::exception&) {
    return false;  // a different key: the RFC 5649 integrity check fails
  }
}

}  // namespace testkdf
