// The standard descriptors 0, 1 and 2, made safe before anything opens a file.
#pragma once

namespace zaptid::cli {

/// True when standard input was closed when the process started. It has since been reopened
/// on /dev/null (see std_fds.cpp), so no file zaptid opens can take descriptor 0.
bool stdin_was_closed();
/// True when standard output was closed when the process started (reopened on /dev/null).
/// Every command that writes to standard output refuses to start then: its output would be lost.
bool stdout_was_closed();
/// True when standard error was closed when the process started (reopened on /dev/null).
bool stderr_was_closed();

/// Marks the descriptors that were closed at start (and are now /dev/null) close-on-exec, so a
/// program this process execs starts with them closed, as this one did, and sees for itself what
/// was closed (the front before it runs zaptid-net). Only if the exec succeeds: a failed one
/// leaves them as they are.
void close_reopened_descriptors_on_exec();

}  // namespace zaptid::cli
