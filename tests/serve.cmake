# Serving backups (issue 15).
# The shared frame cache and the thread-safe chain image: also built and run
# under ThreadSanitizer (label tsan, scripts/test.sh).
add_executable(frame_cache_test frame_cache_test.cc)
target_compile_options(frame_cache_test PRIVATE ${STRATA_WARNINGS})
target_link_libraries(frame_cache_test PRIVATE strata_backup strata_image_open strata_test_util
  GTest::gtest GTest::gtest_main Threads::Threads)
add_test(NAME frame_cache COMMAND frame_cache_test)
set_tests_properties(frame_cache PROPERTIES LABELS "tsan;unit")
# strata serve with real nbdkit, qemu-img, nbdcopy, nbdinfo and QEMU.
strata_test(serve_test SOURCES serve_test.cc LINKS nlohmann_json::nlohmann_json LABEL serve)
add_dependencies(serve_test strata)
# strata mount / umount on real FUSE, loop devices and ext4 (as root).
strata_test(mount_test SOURCES mount_test.cc LINKS nlohmann_json::nlohmann_json LABEL serve)
add_dependencies(mount_test strata)
# The tracking filter (nbdkit --filter=strata) with real nbdkit, nbdcopy and
# qemu-io; checkpoints and backups through its control socket; SIGKILL.
strata_test(filter_test SOURCES filter_test.cc LINKS nlohmann_json::nlohmann_json LABEL serve)
add_dependencies(filter_test strata extent-dump nbdkit-strata-filter)
