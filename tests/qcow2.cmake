# qcow2 reader (issue 4): golden tests against QEMU, corruption tests, and the
# replay of the fuzz corpus.
# Golden comparisons with QEMU: "system" (release suite only; ~25 s there,
# ~150 s under ASan, so the sanitizer suite runs them only on request).
strata_test(qcow2_test SOURCES qcow2_test.cc LINKS strata_image_open strata_qcow2 strata_extents
  LABEL system)
add_dependencies(qcow2_test extent-dump)
# One rule per test case, but one ctest entry: the suite's images are made
# once per process (SetUpTestSuite), and per-case processes would redo it 66×.
add_executable(qcow2_corrupt_test qcow2_corrupt_test.cc)
target_compile_options(qcow2_corrupt_test PRIVATE ${STRATA_WARNINGS})
target_link_libraries(qcow2_corrupt_test PRIVATE strata_qcow2 strata_image_open strata_extents
  strata_test_util GTest::gtest GTest::gtest_main Threads::Threads)
add_test(NAME qcow2_corrupt_test COMMAND qcow2_corrupt_test)
set_tests_properties(qcow2_corrupt_test PROPERTIES LABELS unit)
strata_test(qcow2_codec_test SOURCES qcow2_codec_test.cc LINKS strata_qcow2 strata_extents)
# The fuzz target's body and (with clang) the libFuzzer binary.
add_subdirectory(${PROJECT_SOURCE_DIR}/fuzz ${PROJECT_BINARY_DIR}/fuzz)
strata_test(qcow2_fuzz_replay_test SOURCES qcow2_fuzz_replay_test.cc LINKS strata_qcow2_fuzz_one)
# Random differential testing against QEMU (issue 13): random sequences of
# qemu-img / qemu-io operations, every answer compared with QEMU's. Label
# "qemu": it shells out heavily (release suite only; test.sh runs every label
# there). Long runs: bench/qcow2_differential.sh.
strata_test(qcow2_differential_test SOURCES qcow2_differential_test.cc
  LINKS strata_image_open strata_qcow2 strata_extents LABEL qemu)
add_dependencies(qcow2_differential_test extent-dump)
# Named regressions for what the differential test found, external data
# files, and the rules on which files opening an image may touch.
strata_test(qcow2_regression_test SOURCES qcow2_regression_test.cc
  LINKS strata_image_open strata_qcow2 strata_extents nlohmann_json::nlohmann_json)
add_dependencies(qcow2_regression_test extent-dump strata)
