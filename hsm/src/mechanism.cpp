#include "hsm/mechanism.h"

#include <array>

namespace hsm {

// Parameter structs and the buffers they point into. Heap-allocated, so the pointers
// inside stay valid when the Mechanism moves. Buffers are SecureBytes: IVs and KDF
// contexts carry nonces.
struct Mechanism::Params {
  SecureBytes first;   // IV, derivation data or SP 800-108 label
  SecureBytes second;  // AAD or SP 800-108 context
  CK_GCM_PARAMS gcm{};
  CK_KEY_DERIVATION_STRING_DATA derivation{};
  p11v3::CK_SP800_108_COUNTER_FORMAT counter_format{};
  p11v3::CK_SP800_108_DKM_LENGTH_FORMAT dkm_format{};
  std::array<std::uint8_t, 1> separator{0x00};
  std::array<p11v3::CK_PRF_DATA_PARAM, 5> data_params{};
  p11v3::CK_SP800_108_KDF_PARAMS kdf{};
};

namespace {
CK_BYTE_PTR pointer_or_null(SecureBytes& bytes) { return bytes.empty() ? nullptr : bytes.data(); }
}  // namespace

Mechanism::Mechanism(CK_MECHANISM_TYPE type) { mechanism_.mechanism = type; }

Mechanism::~Mechanism() = default;

Mechanism Mechanism::aes_gcm(ByteView iv, ByteView aad, CK_ULONG tag_bits) {
  Mechanism result(CKM_AES_GCM);
  result.params_ = std::make_unique<Params>();
  Params& p = *result.params_;
  p.first = SecureBytes(iv);
  p.second = SecureBytes(aad);
  p.gcm.pIv = pointer_or_null(p.first);
  p.gcm.ulIvLen = p.first.size();
  p.gcm.ulIvBits = p.first.size() * 8;
  p.gcm.pAAD = pointer_or_null(p.second);
  p.gcm.ulAADLen = p.second.size();
  p.gcm.ulTagBits = tag_bits;
  result.mechanism_.pParameter = &p.gcm;
  result.mechanism_.ulParameterLen = sizeof p.gcm;
  return result;
}

Mechanism Mechanism::aes_ecb_encrypt_data(ByteView data) {
  Mechanism result(CKM_AES_ECB_ENCRYPT_DATA);
  result.params_ = std::make_unique<Params>();
  Params& p = *result.params_;
  p.first = SecureBytes(data);
  p.derivation.pData = pointer_or_null(p.first);
  p.derivation.ulLen = p.first.size();
  result.mechanism_.pParameter = &p.derivation;
  result.mechanism_.ulParameterLen = sizeof p.derivation;
  return result;
}

Mechanism Mechanism::sp800_108_counter(CK_MECHANISM_TYPE prf, ByteView label, ByteView context) {
  Mechanism result(CKM_SP800_108_COUNTER_KDF);
  result.params_ = std::make_unique<Params>();
  Params& p = *result.params_;
  p.first = SecureBytes(label);
  p.second = SecureBytes(context);
  p.counter_format = {CK_FALSE, 32};
  p.dkm_format = {p11v3::SP800_108_DKM_LENGTH_SUM_OF_KEYS, CK_FALSE, 32};
  // [i]_32be || label || 0x00 || context || [L]_32be: OpenSSL KBKDF's counter layout.
  p.data_params[0] = {p11v3::SP800_108_ITERATION_VARIABLE, &p.counter_format,
                      sizeof p.counter_format};
  p.data_params[1] = {p11v3::SP800_108_BYTE_ARRAY, pointer_or_null(p.first), p.first.size()};
  p.data_params[2] = {p11v3::SP800_108_BYTE_ARRAY, p.separator.data(), p.separator.size()};
  p.data_params[3] = {p11v3::SP800_108_BYTE_ARRAY, pointer_or_null(p.second), p.second.size()};
  p.data_params[4] = {p11v3::SP800_108_DKM_LENGTH, &p.dkm_format, sizeof p.dkm_format};
  p.kdf.prfType = prf;
  p.kdf.ulNumberOfDataParams = p.data_params.size();
  p.kdf.pDataParams = p.data_params.data();
  p.kdf.ulAdditionalDerivedKeys = 0;
  p.kdf.pAdditionalDerivedKeys = nullptr;
  result.mechanism_.pParameter = &p.kdf;
  result.mechanism_.ulParameterLen = sizeof p.kdf;
  return result;
}

}  // namespace hsm
