// zaptid compose: the ID of given parts, the inverse of decode.
#pragma once

#include <optional>
#include <string>

#include "layout_options.h"
#include "output.h"

namespace zaptid::cli {

struct ComposeOptions {
  std::string time;                    ///< RFC 3339, Unix milliseconds or "now"
  std::optional<uint64_t> tick;        ///< the raw time field instead of --time
  std::optional<uint64_t> sequence;
  std::optional<uint64_t> machine_id;
  bool max = false;                    ///< unset parts take their largest value instead of 0
  IdFormat format = IdFormat::kDec;
  LayoutOptions layout;
};

void setup_compose(CLI::App& app, Action& action);
int run_compose(const ComposeOptions& opt);

}  // namespace zaptid::cli
