// The other half of cmake/ZaptidLazyOpenssl.cmake's stubs: on the first call of any OpenSSL
// function, open the shared OpenSSL and point every stub at the real function.
#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

extern "C" {
// Generated (stubs.s): one entry per function, first the address of its loading stub.
extern void* zaptid_lazy_openssl_table[];
extern const unsigned zaptid_lazy_openssl_count;
extern const char zaptid_lazy_openssl_names[];  // the functions' names, each ended by a NUL
// Called by the stubs: the real address of function `index`.
void* zaptid_lazy_openssl_load(unsigned index);
}

namespace {

// Nothing can be returned to a caller deep inside gRPC, which expects OpenSSL to be there:
// say what is missing on one line and end the process as any failed command does (exit 1).
[[noreturn]] void fail(const std::string& what) {
  const std::string line = "zaptid: TLS needs OpenSSL, and " + what + " (Debian: apt-get install libssl3)\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  ::_exit(1);
}

void load_all() {
  // RTLD_GLOBAL: net_guard.cpp finds the real SSL_read with dlsym(RTLD_NEXT).
  void* ssl = ::dlopen(ZAPTID_LIBSSL_SONAME, RTLD_NOW | RTLD_GLOBAL);
  if (ssl == nullptr) fail(std::string("cannot be loaded: ") + ::dlerror());
  // Resolve them all before publishing any, so a library without one of them fails as a whole.
  std::vector<void*> functions;
  functions.reserve(zaptid_lazy_openssl_count);
  for (const char* name = zaptid_lazy_openssl_names; functions.size() < zaptid_lazy_openssl_count;
       name += std::strlen(name) + 1) {
    void* function = ::dlsym(ssl, name);
    if (function == nullptr) fail(std::string(ZAPTID_LIBSSL_SONAME " has no function ") + name);
    functions.push_back(function);
  }
  for (unsigned i = 0; i < zaptid_lazy_openssl_count; ++i) {
    // Other threads may be jumping through the table meanwhile: each entry is one aligned word,
    // and any of them still at its stub comes here and waits on the once flag.
    std::atomic_ref<void*>(zaptid_lazy_openssl_table[i]).store(functions[i], std::memory_order_release);
  }
}

}  // namespace

void* zaptid_lazy_openssl_load(unsigned index) {
  static std::once_flag once;
  std::call_once(once, load_all);
  return std::atomic_ref<void*>(zaptid_lazy_openssl_table[index]).load(std::memory_order_acquire);
}
