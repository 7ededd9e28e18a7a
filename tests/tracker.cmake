# Tests for engine/tracker (issue 3). The concurrency test also runs under
# ThreadSanitizer (label "tsan", scripts/test.sh).
strata_test(tracker_test SOURCES tracker_test.cc LINKS strata_tracker)
# Registered as one ctest test so it can carry both labels "tsan" and
# "unit" (gtest_discover_tests in strata_test() keeps only the first).
add_executable(tracker_concurrency_test tracker_concurrency_test.cc)
target_compile_options(tracker_concurrency_test PRIVATE ${STRATA_WARNINGS})
target_link_libraries(tracker_concurrency_test PRIVATE strata_tracker strata_test_util
                      GTest::gtest GTest::gtest_main Threads::Threads)
add_test(NAME tracker_concurrency COMMAND tracker_concurrency_test)
set_tests_properties(tracker_concurrency PROPERTIES LABELS "tsan;unit")
# The crash test fork+execs a helper that is SIGKILLed at random moments.
add_executable(tracker_crash_child tracker_crash_child.cc)
target_compile_options(tracker_crash_child PRIVATE ${STRATA_WARNINGS})
target_link_libraries(tracker_crash_child PRIVATE strata_tracker)
strata_test(tracker_crash_test SOURCES tracker_crash_test.cc LINKS strata_tracker)
add_dependencies(tracker_crash_test tracker_crash_child)
# The C header is tested from a C program (linked with the C++ runtime).
add_executable(tracker_c_test tracker_c_test.c)
target_compile_options(tracker_c_test PRIVATE -Wall -Wextra -Werror -std=c11)
target_include_directories(tracker_c_test PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(tracker_c_test PRIVATE strata_capi)
set_target_properties(tracker_c_test PROPERTIES LINKER_LANGUAGE CXX)
add_test(NAME tracker_c_api COMMAND tracker_c_test)
set_tests_properties(tracker_c_api PROPERTIES LABELS unit)
strata_test(tracker_cli_test SOURCES tracker_cli_test.cc LINKS strata_extents LABEL system)
add_dependencies(tracker_cli_test strata extent-dump)
# Power loss (issue 11): the tracker over FaultEnv, cut at random calls.
strata_test(tracker_power_test SOURCES tracker_power_test.cc LINKS strata_tracker)
# The tracker's control socket (TrackerControlServer / TrackerHandle) in one
# process; one ctest test so it carries both labels "tsan" and "unit".
add_executable(tracker_control_test tracker_control_test.cc)
target_compile_options(tracker_control_test PRIVATE ${STRATA_WARNINGS})
target_link_libraries(tracker_control_test PRIVATE strata_tracker strata_test_util
                      GTest::gtest GTest::gtest_main Threads::Threads)
add_test(NAME tracker_control COMMAND tracker_control_test)
set_tests_properties(tracker_control PROPERTIES LABELS "tsan;unit")
