// zaptid gen: IDs made locally, no server.
#pragma once

#include "common.h"

namespace zaptid::cli {

struct GenOptions {
  uint64_t count = 1;
  IdFormat format = IdFormat::kDec;
  LayoutOptions layout;
  IdentityOptions identity;
};

void setup_gen(CLI::App& app, Action& action);
int run_gen(const GenOptions& opt);

}  // namespace zaptid::cli
