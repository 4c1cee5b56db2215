// The Content-Type rule of the JSON endpoints (docs/SERVER.md "Endpoints").
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kms::server {

// Why a request's Content-Type field value is not acceptable for the JSON endpoints (415),
// or nullopt: application/json (case-insensitive), parameters allowed, a charset parameter
// only as utf-8.
std::optional<std::string> json_content_type_problem(std::string_view value);

}  // namespace kms::server
