// zaptid gen: IDs made locally, no server.
#pragma once

#include "layout_options.h"
#include "machine_identity.h"
#include "output.h"

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
