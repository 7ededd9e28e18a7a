# Tests for engine/quiesce (issue 6). Fake-backend tests are "unit"; tests
# that mount real filesystems or run qemu-ga are "system".
strata_test(quiesce_test SOURCES quiesce_test.cc LINKS strata_quiesce)
# qemu-ga's guest-fsfreeze-thaw thaws every frozen filesystem of the host, so
# these tests never run beside each other.
strata_test(quiesce_system_test SOURCES quiesce_system_test.cc LINKS strata_quiesce LABEL system
  LOCK fsfreeze)
add_dependencies(quiesce_system_test strata)
strata_test(quiesce_protocol_test SOURCES quiesce_protocol_test.cc LINKS strata_quiesce)
# Issue 17 on real filesystems: SIGKILL recovery, device checks, descriptors
# kept from freeze to thaw, counted hooks. Same lock: it freezes too.
strata_test(quiesce_recovery_test SOURCES quiesce_recovery_test.cc LINKS strata_quiesce
  LABEL system LOCK fsfreeze)
add_dependencies(quiesce_recovery_test strata)
