// Text encodings of key blobs: hex and base64 (standard or URL-safe alphabet, padding
// optional), auto-detected, and reading them from files.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "hsm/secure_bytes.h"

namespace provisioning {

std::string to_hex(hsm::ByteView bytes);
std::string to_base64(hsm::ByteView bytes);
std::optional<hsm::Bytes> from_hex(std::string_view text);
std::optional<hsm::Bytes> from_base64(std::string_view text);
// Hex when the text is an even number of hex digits, else base64. Surrounding whitespace
// is ignored; "hex:" / "base64:" prefixes force the encoding.
std::optional<hsm::Bytes> decode_blob(std::string_view text);

// Reads a whole file; throws FileError when it can't.
std::string read_text_file(const std::string& path);
// Writes `text` to a new file (mode 0600), refusing to overwrite; "-" writes to stdout.
void write_new_file(const std::string& path, const std::string& text);
void remove_file_quietly(const std::string& path) noexcept;

}  // namespace provisioning
