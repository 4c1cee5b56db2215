#include "reference_kms.h"

#include <stdexcept>

#include "kms/client/crypto.h"
#include "kms/client/envelope_builder.h"

namespace kmstest {

using namespace kms::client;

namespace {

Bytes to_bytes(const Secret& secret) { return Bytes(secret.view().begin(), secret.view().end()); }

Bytes envelope(ByteView key, MessageType type, Profile profile, const VectorInputs& in,
               std::uint64_t timestamp, const Bytes& iv, const std::string& chair,
               const std::string& responder, const Bytes& nonce) {
  EnvelopeFields fields;
  fields.type = type;
  fields.profile = static_cast<std::uint8_t>(profile);
  fields.suite = in.suite;
  fields.key_version = in.key_version;
  fields.timestamp = timestamp;
  fields.iv = iv;
  fields.chair_id = chair;
  fields.responder_id = responder;
  fields.encrypted_chair_id = chair;
  fields.encrypted_responder_id = responder;
  return seal_envelope(key, fields, nonce);
}

Bytes response(Profile profile, MessageType type, const Bytes& conf, const Bytes& kid,
               std::uint8_t suite, const Bytes& wrapped) {
  Bytes out;
  append_u8(out, kProtocolVersion);
  append_u8(out, static_cast<std::uint8_t>(type));
  append_u8(out, static_cast<std::uint8_t>(profile));
  append_u8(out, suite);
  out.insert(out.end(), conf.begin(), conf.end());
  out.insert(out.end(), kid.begin(), kid.end());
  append_u16(out, static_cast<std::uint16_t>(wrapped.size()));
  out.insert(out.end(), wrapped.begin(), wrapped.end());
  return out;
}

}  // namespace

NamedValues compute_vectors(Profile p, const VectorInputs& in) {
  NamedValues v;
  auto add = [&](const std::string& name, Bytes value) { v.emplace_back(name, std::move(value)); };
  const std::string& a = in.chair_id;
  const std::string& b = in.member_b_id;
  const std::string& c = in.member_c_id;

  const Secret ke_a = kdf(p, in.k_a, label("envelope"), subscriber_child_context(a));
  const Secret kr_a = kdf(p, in.k_a, label("response"), subscriber_child_context(a));
  const Secret ke_b = kdf(p, in.k_b, label("envelope"), subscriber_child_context(b));
  const Secret kr_b = kdf(p, in.k_b, label("response"), subscriber_child_context(b));
  const Secret ke_c = kdf(p, in.k_c, label("envelope"), subscriber_child_context(c));
  const Secret kr_c = kdf(p, in.k_c, label("response"), subscriber_child_context(c));
  add("KE_A", to_bytes(ke_a));
  add("KR_A", to_bytes(kr_a));
  add("KE_B", to_bytes(ke_b));
  add("KR_B", to_bytes(kr_b));
  add("KE_C", to_bytes(ke_c));
  add("KR_C", to_bytes(kr_c));

  add("E_A_for_B",
      envelope(ke_a, MessageType::chair_invite, p, in, in.time, in.iv_a_for_b, a, b, in.r_a));
  add("E_B",
      envelope(ke_b, MessageType::responder_request, p, in, in.time + 1, in.iv_b, a, b, in.r_b));
  add("E_A_for_C",
      envelope(ke_a, MessageType::chair_invite, p, in, in.time + 2, in.iv_a_for_c, a, c, in.r_a));
  add("E_C",
      envelope(ke_c, MessageType::responder_request, p, in, in.time + 3, in.iv_c, a, c, in.r_c));

  const Bytes conf = conference_id(a, in.r_a);
  const Bytes kid_a = key_id(conf, a, in.r_a);
  const Bytes kid_b = key_id(conf, b, in.r_b);
  const Bytes kid_c = key_id(conf, c, in.r_c);
  add("conf_id", conf);
  add("key_id_A", kid_a);
  add("key_id_B", kid_b);
  add("key_id_C", kid_c);

  Bytes chair_context;
  append_lp(chair_context, a);
  append_lp(chair_context, ByteView(in.r_a));
  append_u8(chair_context, in.suite);
  auto member_context = [&](const std::string& id, const Bytes& r) {
    Bytes out;
    append_lp(out, ByteView(conf));
    append_lp(out, id);
    append_lp(out, ByteView(r));
    append_u8(out, in.suite);
    return out;
  };
  const Secret k1 = kdf(p, in.master, label("media-chair"), chair_context);
  const Secret k2 = kdf(p, in.master, label("media-member"), member_context(b, in.r_b));
  const Secret k3 = kdf(p, in.master, label("media-member"), member_context(c, in.r_c));
  add("K1", to_bytes(k1));
  add("K2", to_bytes(k2));
  add("K3", to_bytes(k3));

  auto wrap_key = [&](const Secret& kr, MessageType type, const std::string& responder,
                      const Bytes& nonce) {
    return kdf(p, kr, label("response-wrap"),
               response_wrap_context(type, conf, a, responder, nonce, in.suite));
  };
  const Secret w_a_b = wrap_key(kr_a, MessageType::chair_response, b, in.r_a);
  const Secret w_b = wrap_key(kr_b, MessageType::responder_response, b, in.r_b);
  const Secret w_a_c = wrap_key(kr_a, MessageType::chair_response, c, in.r_a);
  const Secret w_c = wrap_key(kr_c, MessageType::responder_response, c, in.r_c);
  add("W_A_for_B", to_bytes(w_a_b));
  add("W_B", to_bytes(w_b));
  add("W_A_for_C", to_bytes(w_a_c));
  add("W_C", to_bytes(w_c));
  add("response_A_for_B",
      response(p, MessageType::chair_response, conf, kid_a, in.suite, aes_key_wrap_pad(w_a_b, k1)));
  add("response_B", response(p, MessageType::responder_response, conf, kid_b, in.suite,
                             aes_key_wrap_pad(w_b, k2)));
  add("response_A_for_C",
      response(p, MessageType::chair_response, conf, kid_a, in.suite, aes_key_wrap_pad(w_a_c, k1)));
  add("response_C", response(p, MessageType::responder_response, conf, kid_c, in.suite,
                             aes_key_wrap_pad(w_c, k3)));

  auto bridge_key = [&](const std::string& member, Role role, const Bytes& kid) {
    return kdf(p, in.bridge_key, label("bridge-wrap"),
               bridge_wrap_context(in.bridge_id, conf, member, role, kid, in.suite));
  };
  const Secret bw_a = bridge_key(a, Role::chair, kid_a);
  const Secret bw_b = bridge_key(b, Role::member, kid_b);
  const Secret bw_c = bridge_key(c, Role::member, kid_c);
  add("BW_A", to_bytes(bw_a));
  add("BW_B", to_bytes(bw_b));
  add("BW_C", to_bytes(bw_c));
  add("bridge_wrapped_A", aes_key_wrap_pad(bw_a, k1));
  add("bridge_wrapped_B", aes_key_wrap_pad(bw_b, k2));
  add("bridge_wrapped_C", aes_key_wrap_pad(bw_c, k3));
  return v;
}

const Bytes& value_of(const NamedValues& values, const std::string& name) {
  for (const auto& [key, value] : values) {
    if (key == name) return value;
  }
  throw std::out_of_range("no vector value named " + name);
}

std::string hex(ByteView bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (std::uint8_t byte : bytes) {
    out += kDigits[byte >> 4];
    out += kDigits[byte & 15];
  }
  return out;
}

Bytes from_hex(const std::string& text) {
  if (text.size() % 2 != 0) throw std::invalid_argument("odd hex length");
  Bytes out;
  for (std::size_t i = 0; i < text.size(); i += 2) {
    out.push_back(static_cast<std::uint8_t>(std::stoi(text.substr(i, 2), nullptr, 16)));
  }
  return out;
}

}  // namespace kmstest
