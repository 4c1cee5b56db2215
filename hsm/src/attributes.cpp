#include "hsm/attributes.h"

#include <algorithm>

namespace hsm {

AttributeTemplate::AttributeTemplate(const AttributeTemplate& other) { *this = other; }

AttributeTemplate& AttributeTemplate::operator=(const AttributeTemplate& other) {
  if (this == &other) return *this;
  attributes_.clear();
  storage_.clear();
  nested_.clear();
  // Re-point every attribute into this template's own storage; a nested template is copied
  // as a template (its CK_ATTRIBUTEs point into other's storage).
  for (const CK_ATTRIBUTE& attribute : other.attributes_) {
    const auto nested =
        std::find_if(other.nested_.begin(), other.nested_.end(), [&](const AttributeTemplate& t) {
          return attribute.pValue != nullptr && attribute.pValue == t.attributes_.data();
        });
    if (nested != other.nested_.end()) {
      set_template(attribute.type, *nested);
      continue;
    }
    const auto* value = static_cast<const std::uint8_t*>(attribute.pValue);
    set_bytes(attribute.type, ByteView(value, attribute.ulValueLen));
  }
  return *this;
}

AttributeTemplate& AttributeTemplate::set_bool(CK_ATTRIBUTE_TYPE type, bool value) {
  const CK_BBOOL flag = value ? CK_TRUE : CK_FALSE;
  return set_bytes(type, ByteView(&flag, sizeof flag));
}

AttributeTemplate& AttributeTemplate::set_ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value) {
  return set_bytes(type, ByteView(reinterpret_cast<const std::uint8_t*>(&value), sizeof value));
}

AttributeTemplate& AttributeTemplate::set_string(CK_ATTRIBUTE_TYPE type, std::string_view value) {
  return set_bytes(type,
                   ByteView(reinterpret_cast<const std::uint8_t*>(value.data()), value.size()));
}

AttributeTemplate& AttributeTemplate::set_bytes(CK_ATTRIBUTE_TYPE type, ByteView value) {
  Bytes& stored = storage_.emplace_back(value.begin(), value.end());
  return put(
      {type, stored.empty() ? nullptr : stored.data(), static_cast<CK_ULONG>(stored.size())});
}

AttributeTemplate& AttributeTemplate::put(const CK_ATTRIBUTE& attribute) {
  auto existing = std::find_if(attributes_.begin(), attributes_.end(),
                               [&](const CK_ATTRIBUTE& a) { return a.type == attribute.type; });
  if (existing != attributes_.end()) {
    *existing = attribute;  // the old value's storage stays until the template dies
  } else {
    attributes_.push_back(attribute);
  }
  return *this;
}

AttributeTemplate& AttributeTemplate::set_template(CK_ATTRIBUTE_TYPE type,
                                                   const AttributeTemplate& value) {
  AttributeTemplate& stored = nested_.emplace_back(value);
  return put({type, stored.attributes_.empty() ? nullptr : stored.attributes_.data(),
              static_cast<CK_ULONG>(stored.attributes_.size() * sizeof(CK_ATTRIBUTE))});
}

AttributeTemplate& AttributeTemplate::move_to_end(CK_ATTRIBUTE_TYPE type) {
  auto found = std::find_if(attributes_.begin(), attributes_.end(),
                            [type](const CK_ATTRIBUTE& a) { return a.type == type; });
  if (found != attributes_.end()) std::rotate(found, found + 1, attributes_.end());
  return *this;
}

}  // namespace hsm
