// The token operations of the services, one per protocol step, each returning a guarded
// handle or wrapped bytes: the server never sees key values (private to kms_core; bench/tokens
// times subscriber_keys).
#pragma once

#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "hsm/session.h"
#include "kms/core/protocol.h"
#include "tokens/key_store.h"
#include "tokens/profile.h"

namespace kms::token_steps {

// KDF(base, L(label_name), context) in the token with the given template; the result is
// destroyed when the guard dies.
hsm::ObjectGuard derive(hsm::Session& session, const tokens::TokenProfile& profile,
                        CK_OBJECT_HANDLE base, std::string_view label_name, hsm::ByteView context,
                        hsm::AttributeTemplate attributes);

// A media key for one use: kept by the media-key cache, or, with the cache off, derived in
// the operation's session and destroyed with this object.
class MediaKey {
 public:
  explicit MediaKey(std::shared_ptr<const tokens::StoredKey> kept) : kept_(std::move(kept)) {}
  explicit MediaKey(hsm::ObjectGuard own) : own_(std::move(own)) {}
  CK_OBJECT_HANDLE handle() const noexcept { return kept_ ? kept_->handle() : own_.get(); }

 private:
  std::shared_ptr<const tokens::StoredKey> kept_;
  hsm::ObjectGuard own_;
};

// A media key K = KDF(M, L(label_name), context) ("media-chair" / "media-member"), kept in the
// key store's derived-key cache for its next use (the chair's K1 by every invitation of the
// conference, each K by the bridge's release): derived on a miss only. With the cache off
// ([token] media_key_cache_size = 0) derived in `session` each time. master is
// keys.master()'s handle for this operation. Keep the result while using its handle().
MediaKey media_key(tokens::KeyStore& keys, hsm::Session& session,
                   const tokens::TokenProfile& profile, CK_OBJECT_HANDLE master,
                   std::string_view label_name, hsm::ByteView context);

// The keys the key store keeps for a subscriber instead of its root key K_X (they depend on
// nothing else): {KE_X, KR_X} = {KDF(K_X, "envelope", ID), KDF(K_X, "response", ID)}, session
// objects. Index of each in ResolvedKey::child():
inline constexpr std::size_t kEnvelopeKey = 0;
inline constexpr std::size_t kResponseKey = 1;
std::vector<CK_OBJECT_HANDLE> subscriber_keys(hsm::Session& session,
                                              const tokens::TokenProfile& profile,
                                              CK_OBJECT_HANDLE root_key, std::string_view identity);

// AES-GCM decrypt in the token; a tag/AAD failure (as the token's quirks report it) is
// ProtocolError(envelope_authentication_failed), any other token error an hsm::Error.
hsm::SecureBytes open_envelope(hsm::Session& session, const tokens::TokenProfile& profile,
                               CK_OBJECT_HANDLE envelope_key, hsm::ByteView iv, hsm::ByteView aad,
                               hsm::ByteView sealed, std::string_view whose);

// RFC 5649 wrap of key under wrapping_key with the profile's mechanism.
Bytes wrap(hsm::Session& session, const tokens::TokenProfile& profile,
           CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key);

}  // namespace kms::token_steps
