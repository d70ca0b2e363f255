# What `cmake --install` and `cpack -G DEB` put where. Included from the
# top-level CMakeLists.txt after the targets exist. The units name
# /usr/bin/dashd and /etc/dashd/dashd.conf, so the prefix defaults to /usr
# (see CMakeLists.txt).

# The programs, libdash and its headers.
install(TARGETS dashd dashctl dash-roots dash-bench
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT dashd)
install(TARGETS dash
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dashd
                NAMELINK_COMPONENT dashd)
# The CUDA backend, loaded on first use from <libdir>/dash/ (beside
# libdash) or from the libdir the programs were built for; a machine
# without the CUDA libraries simply has no CUDA device.
if(TARGET dash_cuda)
  install(TARGETS dash_cuda
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/dash COMPONENT dashd)
endif()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/dash
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dashd
        FILES_MATCHING PATTERN "*.h")

# pkg-config: paths relative to ${prefix} where they can be, so that a
# sysroot or a relocated tree works.
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(DASH_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(DASH_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
configure_file(${PROJECT_SOURCE_DIR}/cmake/dash.pc.in
               ${PROJECT_BINARY_DIR}/dash.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/dash.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dashd)

# systemd: the units, the user and group, the socket's directory.
set(DASH_SYSTEMD_DIR ${PROJECT_SOURCE_DIR}/systemd)
install(FILES ${DASH_SYSTEMD_DIR}/dashd.service ${DASH_SYSTEMD_DIR}/dashd.socket
        DESTINATION lib/systemd/system COMPONENT dashd)
install(FILES ${DASH_SYSTEMD_DIR}/dashd.sysusers
        DESTINATION lib/sysusers.d RENAME dashd.conf COMPONENT dashd)
install(FILES ${DASH_SYSTEMD_DIR}/dashd.tmpfiles
        DESTINATION lib/tmpfiles.d RENAME dashd.conf COMPONENT dashd)
# The configuration: /etc/dashd/dashd.conf under the prefix /usr.
install(FILES ${DASH_SYSTEMD_DIR}/dashd.conf
        DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/dashd COMPONENT dashd)

# The manual.
install(FILES ${PROJECT_SOURCE_DIR}/man/dashd.8
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 COMPONENT dashd)
install(FILES ${PROJECT_SOURCE_DIR}/man/dashctl.1
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT dashd)
install(FILES ${PROJECT_SOURCE_DIR}/man/libdash.3
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man3 COMPONENT dashd)

# The Debian package: `cpack -G DEB` in the build directory.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME dashd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "dashd")
set(CPACK_PACKAGE_CONTACT "dashd maintainers <dashd@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "Shampoo inverse-root daemon for training processes")
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# A shlibs file and the ldconfig trigger, for libdash.so.0.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
# The configuration is a conffile: an upgrade keeps the admin's edits.
configure_file(${PROJECT_SOURCE_DIR}/packaging/conffiles.in
               ${PROJECT_BINARY_DIR}/packaging/conffiles @ONLY)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_BINARY_DIR}/packaging/conffiles
    ${PROJECT_SOURCE_DIR}/packaging/postinst
    ${PROJECT_SOURCE_DIR}/packaging/prerm
    ${PROJECT_SOURCE_DIR}/packaging/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
