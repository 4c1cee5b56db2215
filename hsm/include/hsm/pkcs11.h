// The PKCS#11 headers the project builds on: p11-kit's pkcs11.h (v2.40) plus the
// PKCS#11 3.0 constants and structures it lacks (SP 800-108 KDF, RFC 5649 KWP).
#pragma once

#include <p11-kit/pkcs11.h>

#ifndef CKM_AES_KEY_WRAP_KWP
#define CKM_AES_KEY_WRAP_KWP 0x0000210BUL
#endif
#ifndef CKM_SP800_108_COUNTER_KDF
#define CKM_SP800_108_COUNTER_KDF 0x000003ACUL
#endif
#ifndef CKM_HKDF_DERIVE
#define CKM_HKDF_DERIVE 0x0000402AUL
#endif

namespace hsm::p11v3 {
// PKCS#11 3.0 section 2.43 (SP 800-108). NSS checks ulValueLen equals sizeof(struct),
// so the layouts must match the specification exactly.
using CK_PRF_DATA_TYPE = CK_ULONG;
inline constexpr CK_PRF_DATA_TYPE SP800_108_ITERATION_VARIABLE = 0x00000001UL;
inline constexpr CK_PRF_DATA_TYPE SP800_108_OPTIONAL_COUNTER = 0x00000002UL;
inline constexpr CK_PRF_DATA_TYPE SP800_108_DKM_LENGTH = 0x00000003UL;
inline constexpr CK_PRF_DATA_TYPE SP800_108_BYTE_ARRAY = 0x00000004UL;
inline constexpr CK_ULONG SP800_108_DKM_LENGTH_SUM_OF_KEYS = 0x00000001UL;
inline constexpr CK_ULONG SP800_108_DKM_LENGTH_SUM_OF_SEGMENTS = 0x00000002UL;

struct CK_PRF_DATA_PARAM {
  CK_PRF_DATA_TYPE type;
  CK_VOID_PTR pValue;
  CK_ULONG ulValueLen;
};
struct CK_SP800_108_COUNTER_FORMAT {
  CK_BBOOL bLittleEndian;
  CK_ULONG ulWidthInBits;
};
struct CK_SP800_108_DKM_LENGTH_FORMAT {
  CK_ULONG dkmLengthMethod;
  CK_BBOOL bLittleEndian;
  CK_ULONG ulWidthInBits;
};
struct CK_DERIVED_KEY {
  CK_ATTRIBUTE_PTR pTemplate;
  CK_ULONG ulAttributeCount;
  CK_OBJECT_HANDLE_PTR phKey;
};
struct CK_SP800_108_KDF_PARAMS {
  CK_MECHANISM_TYPE prfType;
  CK_ULONG ulNumberOfDataParams;
  CK_PRF_DATA_PARAM* pDataParams;
  CK_ULONG ulAdditionalDerivedKeys;
  CK_DERIVED_KEY* pAdditionalDerivedKeys;
};
}  // namespace hsm::p11v3
