# zaptid_grpc: the one target zaptid's code links for gRPC and protobuf (proto/, lib/client,
# lib/server, the zaptid-net helper and the unit tests). Only zaptid-net and the tests end up with it:
# the zaptid command itself links no gRPC, protobuf or OpenSSL (docs/ARCHITECTURE.md, "Two parts").
#
# ZAPTID_STATIC_GRPC=ON (the default) links gRPC, gpr, upb, address_sorting, protobuf, abseil, re2
# and c-ares from the static archives Debian's -dev packages install next to the shared ones
# (libgrpc++-dev, libprotobuf-dev, libabsl-dev, libre2-dev, libc-ares-dev): a network command then
# starts without the dynamic loader binding some 60 shared libraries. OpenSSL and zlib stay
# shared (ZAPTID_STATIC_OPENSSL=OFF): Debian fixes their security bugs, and a shared copy takes
# those fixes without a rebuild; docs/ARCHITECTURE.md has what a static copy would save. OpenSSL
# is then loaded on first use, not at start (ZaptidLazyOpenssl.cmake, ZAPTID_LAZY_OPENSSL).
# dpkg-shlibdeps then derives the .deb's Depends from what is left linked (libc6, zlib1g; fmt,
# spdlog and libstdc++ are compiled in; libssl3 and libmicrohttpd12 are named by hand).
# A ThreadSanitizer build links the shared libraries by default: tests/tsan.supp names them
# (called_from_lib) and ignore_noninstrumented_modules=1 skips them as modules, which does not
# work for uninstrumented code linked into the executable itself.
if(ZAPTID_TSAN)
  set(_zaptid_static_default OFF)
else()
  set(_zaptid_static_default ON)
endif()
option(ZAPTID_STATIC_GRPC "Link gRPC, protobuf, abseil, re2 and c-ares from Debian's static archives"
       ${_zaptid_static_default})
option(ZAPTID_STATIC_OPENSSL "Link OpenSSL and zlib statically too (off: take Debian's security updates)" OFF)

add_library(zaptid_grpc INTERFACE)
# What a target that calls OpenSSL itself (cli/net_guard.cpp) links.
set(ZAPTID_OPENSSL_LINK OpenSSL::SSL OpenSSL::Crypto)
if(NOT ZAPTID_STATIC_GRPC)
  target_link_libraries(zaptid_grpc INTERFACE gRPC::grpc++ protobuf::libprotobuf absl::synchronization)
  return()
endif()

# Where Debian keeps the archives: next to the shared gRPC library CMake found.
get_target_property(_zaptid_grpc_so gRPC::grpc IMPORTED_LOCATION_NONE)
if(NOT _zaptid_grpc_so)
  get_target_property(_zaptid_grpc_so gRPC::grpc LOCATION)
endif()
get_filename_component(_zaptid_libdir "${_zaptid_grpc_so}" DIRECTORY)

set(_zaptid_archives)
foreach(lib grpc++ grpc gpr upb address_sorting protobuf re2 cares)
  set(_a "${_zaptid_libdir}/lib${lib}.a")
  if(NOT EXISTS "${_a}")
    message(FATAL_ERROR "ZAPTID_STATIC_GRPC: ${_a} is missing (Debian: the -dev package of ${lib}); "
                        "configure with -DZAPTID_STATIC_GRPC=OFF to link the shared libraries")
  endif()
  list(APPEND _zaptid_archives "${_a}")
endforeach()
file(GLOB _zaptid_absl "${_zaptid_libdir}/libabsl_*.a")
if(NOT _zaptid_absl)
  message(FATAL_ERROR "ZAPTID_STATIC_GRPC: no libabsl_*.a in ${_zaptid_libdir} (Debian: libabsl-dev)")
endif()
list(SORT _zaptid_absl)
list(APPEND _zaptid_archives ${_zaptid_absl})

if(ZAPTID_STATIC_OPENSSL)
  foreach(lib ssl crypto z)
    list(APPEND _zaptid_archives "${_zaptid_libdir}/lib${lib}.a")
  endforeach()
  set(_zaptid_shared_rest)
else()
  find_package(OpenSSL REQUIRED)
  find_package(ZLIB REQUIRED)
  include(ZaptidLazyOpenssl)  # sets ZAPTID_OPENSSL_LINK
  set(_zaptid_shared_rest ${ZAPTID_OPENSSL_LINK} ZLIB::ZLIB)
endif()

string(REPLACE ";" "," _zaptid_group "${_zaptid_archives}")
# The archives depend on each other in cycles (abseil's above all): the linker rescans the group
# until nothing new is needed, and takes only the members something uses.
target_link_libraries(zaptid_grpc INTERFACE
  "$<LINK_GROUP:RESCAN,${_zaptid_group}>" ${_zaptid_shared_rest} Threads::Threads ${CMAKE_DL_LIBS})
# The headers are the same ones the shared libraries use (/usr/include).
target_include_directories(zaptid_grpc SYSTEM INTERFACE
  $<TARGET_PROPERTY:gRPC::grpc++,INTERFACE_INCLUDE_DIRECTORIES> ${Protobuf_INCLUDE_DIRS})
