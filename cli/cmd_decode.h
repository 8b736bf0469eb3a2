// zaptid decode: an ID's time, sequence and machine id.
#pragma once

#include <string>
#include <vector>

#include "layout_options.h"

namespace zaptid::cli {

enum class DecodeFormat { kText, kJson, kTsv };

struct DecodeOptions {
  std::vector<std::string> ids;  ///< empty or "-": read one ID per line from stdin
  DecodeFormat format = DecodeFormat::kText;
  LayoutOptions layout;
};

void setup_decode(CLI::App& app, Action& action);
int run_decode(const DecodeOptions& opt);

/// Appends one decoded ID in `format` (one line), as decode prints it.
void append_decoded(std::string& out, DecodeFormat format, const Layout& layout, uint64_t id);

}  // namespace zaptid::cli
