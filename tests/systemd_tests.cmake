# dashd under systemd, installing and packaging. Included from
# tests/CMakeLists.txt. Where a systemd tool cannot run (a container
# without it), a test prints "skipped: ..." and exits 77.

set(DASH_SYSTEMD_TEST ${CMAKE_CURRENT_SOURCE_DIR}/systemd_tests.py)

# The units: the directives they must have, systemd-analyze verify, and
# sysusers.d/tmpfiles.d applied to an empty root.
add_test(NAME systemd_units
         COMMAND /usr/bin/python3 ${DASH_SYSTEMD_TEST} units
                 ${PROJECT_SOURCE_DIR}/systemd $<TARGET_FILE:dashd>)
# A client reaches dashd through a socket systemd-socket-activate passed.
add_test(NAME systemd_socket_activation
         COMMAND /usr/bin/python3 ${DASH_SYSTEMD_TEST} socket-activation
                 $<TARGET_FILE:dashd> $<TARGET_FILE:dashctl>)
# READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 on NOTIFY_SOCKET.
add_test(NAME systemd_notify
         COMMAND /usr/bin/python3 ${DASH_SYSTEMD_TEST} notify
                 $<TARGET_FILE:dashd> $<TARGET_FILE:dashctl>)
# The shipped configuration has every key at its default and passes
# --check-config; a broken one fails naming file:line:key.
add_test(NAME dashd_check_config
         COMMAND /usr/bin/python3 ${DASH_SYSTEMD_TEST} check-config
                 ${PROJECT_SOURCE_DIR}/systemd $<TARGET_FILE:dashd>)
# libdash.so exports dash_* and nothing else.
add_test(NAME libdash_exports
         COMMAND /usr/bin/python3 ${DASH_SYSTEMD_TEST} exports
                 $<TARGET_FILE:dash>)
set_tests_properties(systemd_units systemd_socket_activation systemd_notify
                     dashd_check_config libdash_exports PROPERTIES
    TIMEOUT 60 SKIP_RETURN_CODE 77 LABELS "systemd;install")

add_test(NAME man_pages
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/man_pages.sh
                 ${PROJECT_SOURCE_DIR}/man)
set_tests_properties(man_pages PROPERTIES TIMEOUT 30 LABELS "install")

# cmake --install into a DESTDIR; a program outside the tree builds with
# the installed dash.pc and talks to the installed dashd.
add_test(NAME install_destdir
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/install_test.sh
                 ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR}
                 ${CMAKE_INSTALL_PREFIX} ${CMAKE_INSTALL_LIBDIR}
                 ${CMAKE_INSTALL_FULL_SYSCONFDIR} "${DASH_SANITIZE}")
set_tests_properties(install_destdir PROPERTIES
    TIMEOUT 120 SKIP_RETURN_CODE 77 LABELS "install")

# cpack -G DEB, and what the package holds.
add_test(NAME packaging_deb
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/packaging_test.sh
                 ${PROJECT_BINARY_DIR} ${CMAKE_INSTALL_PREFIX}
                 ${CMAKE_INSTALL_FULL_SYSCONFDIR})
set_tests_properties(packaging_deb PROPERTIES
    TIMEOUT 120 SKIP_RETURN_CODE 77 LABELS "packaging")
# Both install the whole project; they must not race a build of it.
set_tests_properties(install_destdir packaging_deb PROPERTIES
    RESOURCE_LOCK dash_install)
