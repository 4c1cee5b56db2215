#include "storage/error.h"

namespace storage {

std::string_view error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::invalid_url:
      return "invalid_url";
    case ErrorKind::unavailable:
      return "unavailable";
    case ErrorKind::busy:
      return "busy";
    case ErrorKind::conflict:
      return "conflict";
    case ErrorKind::duplicate:
      return "duplicate";
    case ErrorKind::schema:
      return "schema";
    case ErrorKind::other:
      break;
  }
  return "other";
}

}  // namespace storage
