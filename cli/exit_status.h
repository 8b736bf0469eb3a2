// Every exit code zaptid uses. Documented in the README and in man/zaptid.1 (EXIT STATUS).
#pragma once

namespace zaptid::cli {

enum ExitStatus : int {
  kExitOk = 0,        ///< done; also when stdout was closed early (`zaptid gen | head -1`)
  kExitFailure = 1,   ///< could not do the job: clock behind, time exhausted, lock held, state damaged, I/O
                      ///< (also a closed or unwritable stdout, an unreadable or closed stdin for decode;
                      ///< serve/get/bench: the network part zaptid-net is missing or of another build)
  kExitUsage = 2,     ///< bad command line: unknown option, bad value, impossible layout
  kExitBadInput = 3,  ///< some input was not a valid ID (decode); the valid ones were still written
  kExitServer = 4,    ///< get/bench: server unreachable, deadline exceeded, or the call was refused
};

}  // namespace zaptid::cli
