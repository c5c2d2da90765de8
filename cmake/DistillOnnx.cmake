# DistillOnnx.cmake - optional ONNX import and export.
#
# ONNX files are protocol buffers described by onnx.proto.  Nothing of ONNX is
# kept in this repository: the .proto that the system ships (Debian:
# python3-onnx or libonnx-dev) is compiled with protoc-c (protobuf-c-compiler)
# at build time, and the generated C is linked with libprotobuf-c
# (libprotobuf-c-dev).
#
#   DISTILL_ONNX       AUTO (default: on when everything is found), ON (fail
#                      when something is missing), OFF
#   DISTILL_ONNX_PROTO the onnx.proto to use (found among the known paths)
#
# Sets DISTILL_ONNX_ENABLED, DISTILL_ONNX_GENERATED (the .pb-c.c file) and
# DISTILL_ONNX_INCLUDE_DIR, and the imported target PkgConfig::PROTOBUF_C.

set(DISTILL_ONNX AUTO CACHE STRING "ONNX import/export: AUTO, ON or OFF")
set_property(CACHE DISTILL_ONNX PROPERTY STRINGS AUTO ON OFF)

set(DISTILL_ONNX_ENABLED OFF)
set(_onnx_why "")

if(DISTILL_ONNX STREQUAL "OFF")
  set(_onnx_why "DISTILL_ONNX=OFF")
else()
  find_file(DISTILL_ONNX_PROTO onnx.proto
    PATHS /usr/lib/python3/dist-packages/onnx
          /usr/include/onnx
          /usr/share/onnx
          /usr/local/include/onnx
          /usr/lib/python3/site-packages/onnx
    NO_DEFAULT_PATH
    DOC "onnx.proto used to generate the ONNX parser")
  find_program(DISTILL_PROTOC_C NAMES protoc-c protoc-gen-c)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(PROTOBUF_C QUIET IMPORTED_TARGET libprotobuf-c)
  endif()
  if(NOT DISTILL_ONNX_PROTO)
    set(_onnx_why "onnx.proto not found (Debian: python3-onnx or libonnx-dev; or set DISTILL_ONNX_PROTO)")
  elseif(NOT DISTILL_PROTOC_C)
    set(_onnx_why "protoc-c not found (Debian: protobuf-c-compiler)")
  elseif(NOT PROTOBUF_C_FOUND)
    set(_onnx_why "libprotobuf-c not found through pkg-config (Debian: libprotobuf-c-dev)")
  else()
    set(DISTILL_ONNX_ENABLED ON)
  endif()
  if(DISTILL_ONNX STREQUAL "ON" AND NOT DISTILL_ONNX_ENABLED)
    message(FATAL_ERROR "DISTILL_ONNX=ON but ${_onnx_why}")
  endif()
endif()

if(DISTILL_ONNX_ENABLED)
  get_filename_component(_onnx_dir "${DISTILL_ONNX_PROTO}" DIRECTORY)
  set(DISTILL_ONNX_INCLUDE_DIR "${PROJECT_BINARY_DIR}/onnx-gen")
  set(DISTILL_ONNX_GENERATED "${DISTILL_ONNX_INCLUDE_DIR}/onnx.pb-c.c")
  file(MAKE_DIRECTORY "${DISTILL_ONNX_INCLUDE_DIR}")
  add_custom_command(
    OUTPUT "${DISTILL_ONNX_GENERATED}" "${DISTILL_ONNX_INCLUDE_DIR}/onnx.pb-c.h"
    COMMAND "${DISTILL_PROTOC_C}" "--proto_path=${_onnx_dir}"
            "--c_out=${DISTILL_ONNX_INCLUDE_DIR}" "${DISTILL_ONNX_PROTO}"
    DEPENDS "${DISTILL_ONNX_PROTO}"
    COMMENT "Generating the ONNX parser from ${DISTILL_ONNX_PROTO}"
    VERBATIM)
  message(STATUS "ONNX import/export: ON (${DISTILL_ONNX_PROTO}, ${DISTILL_PROTOC_C}, "
                 "libprotobuf-c ${PROTOBUF_C_VERSION})")
else()
  message(STATUS "ONNX import/export: OFF (${_onnx_why})")
endif()
