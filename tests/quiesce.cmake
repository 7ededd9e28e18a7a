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
# Coordinator concurrency: also built and run under ThreadSanitizer by
# scripts/test.sh (label tsan), like tracker_concurrency.
add_executable(quiesce_concurrency_test quiesce_concurrency_test.cc)
target_compile_options(quiesce_concurrency_test PRIVATE ${STRATA_WARNINGS})
target_link_libraries(quiesce_concurrency_test PRIVATE strata_quiesce strata_test_util
  GTest::gtest GTest::gtest_main Threads::Threads)
add_test(NAME quiesce_concurrency COMMAND quiesce_concurrency_test)
set_tests_properties(quiesce_concurrency PROPERTIES LABELS "tsan;unit")
