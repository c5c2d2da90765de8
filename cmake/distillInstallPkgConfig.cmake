# Run by `cmake --install`: configure distill.pc for the prefix being
# installed to and install it into <libdir>/pkgconfig.  The caller (an
# install(CODE) block in the top-level CMakeLists.txt) sets DISTILL_PC_*.

set(prefix "${CMAKE_INSTALL_PREFIX}")
if(IS_ABSOLUTE "${DISTILL_PC_LIBDIR}")
  set(libdir "${DISTILL_PC_LIBDIR}")
else()
  set(libdir "\${prefix}/${DISTILL_PC_LIBDIR}")
endif()
if(IS_ABSOLUTE "${DISTILL_PC_INCLUDEDIR}")
  set(includedir "${DISTILL_PC_INCLUDEDIR}")
else()
  set(includedir "\${prefix}/${DISTILL_PC_INCLUDEDIR}")
endif()
set(version "${DISTILL_PC_VERSION}")
set(description "${DISTILL_PC_DESCRIPTION}")
set(openmp_lib "${DISTILL_PC_OPENMP_LIB}")
set(requires_onnx "${DISTILL_PC_REQUIRES_ONNX}")

configure_file("${DISTILL_PC_TEMPLATE}" "${DISTILL_PC_OUTPUT}" @ONLY)

if(IS_ABSOLUTE "${DISTILL_PC_LIBDIR}")
  set(_pc_dest "${DISTILL_PC_LIBDIR}/pkgconfig")
else()
  set(_pc_dest "${CMAKE_INSTALL_PREFIX}/${DISTILL_PC_LIBDIR}/pkgconfig")
endif()
# file(INSTALL) honours DESTDIR and records the file in install_manifest.txt.
file(INSTALL DESTINATION "${_pc_dest}" TYPE FILE FILES "${DISTILL_PC_OUTPUT}")
