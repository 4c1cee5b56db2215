// An attribute template that owns the storage its CK_ATTRIBUTEs point into.
#pragma once

#include <deque>
#include <list>
#include <string_view>
#include <vector>

#include "hsm/pkcs11.h"
#include "hsm/secure_bytes.h"

namespace hsm {

class AttributeTemplate {
 public:
  AttributeTemplate() = default;
  AttributeTemplate(const AttributeTemplate&);
  AttributeTemplate& operator=(const AttributeTemplate&);
  AttributeTemplate(AttributeTemplate&&) noexcept = default;
  AttributeTemplate& operator=(AttributeTemplate&&) noexcept = default;

  // Setting a type twice replaces the earlier value.
  AttributeTemplate& set_bool(CK_ATTRIBUTE_TYPE type, bool value);
  AttributeTemplate& set_ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value);
  AttributeTemplate& set_bytes(CK_ATTRIBUTE_TYPE type, ByteView value);
  AttributeTemplate& set_string(CK_ATTRIBUTE_TYPE type, std::string_view value);
  // An attribute whose value is itself a template (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE):
  // an array of CK_ATTRIBUTE pointing into a copy of `value` owned by this template.
  AttributeTemplate& set_template(CK_ATTRIBUTE_TYPE type, const AttributeTemplate& value);

  // Moves the attribute of this type, if present, after all others (some tokens apply a
  // template in order: SoftHSM 2.6.1 refuses any attribute after CKA_MODIFIABLE=FALSE in
  // C_UnwrapKey).
  AttributeTemplate& move_to_end(CK_ATTRIBUTE_TYPE type);

  CK_ATTRIBUTE* data() noexcept { return attributes_.data(); }
  CK_ULONG size() const noexcept { return static_cast<CK_ULONG>(attributes_.size()); }

 private:
  // Adds attribute, or replaces the one of the same type (keeping its place in the order).
  AttributeTemplate& put(const CK_ATTRIBUTE& attribute);
  std::vector<CK_ATTRIBUTE> attributes_;
  std::deque<Bytes> storage_;            // deque: stable addresses while attributes are added
  std::list<AttributeTemplate> nested_;  // values of set_template (list: stable addresses)
};

}  // namespace hsm
