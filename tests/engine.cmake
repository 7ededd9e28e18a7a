# Backups (issue 5): archives, pipeline, repository and CLI.
strata_test(backup_archive_test SOURCES backup_archive_test.cc LINKS strata_backup)
strata_test(backup_pipeline_test SOURCES backup_pipeline_test.cc LINKS strata_backup)
strata_test(backup_cli_test SOURCES backup_cli_test.cc LINKS strata_extents nlohmann_json::nlohmann_json LABEL system)
add_dependencies(backup_cli_test strata extent-dump)
# strata checkpoint --quiesce (tracker + quiesce) on a real loop-mounted ext4.
strata_test(checkpoint_quiesce_test SOURCES checkpoint_quiesce_test.cc LINKS strata_extents nlohmann_json::nlohmann_json
  LABEL system LOCK fsfreeze)
add_dependencies(checkpoint_quiesce_test strata)
# Issue 10: randomized histories over several disks against a model (CLI,
# qemu-img/qemu-io); bench/chain_model_long.sh runs the long version.
strata_test(chain_model_test SOURCES chain_model_test.cc
  LINKS strata_tracker nlohmann_json::nlohmann_json LABEL system)
add_dependencies(chain_model_test strata)
# Issue 11: power cuts (FaultEnv) at random points of backups, merges and
# catalog updates. 1,000 cut points in the optimised build; 100 in the unit
# run that the sanitizer builds also make.
strata_test(repository_powercut_test SOURCES repository_powercut_test.cc LINKS strata_backup LABEL system)
add_test(NAME repository_powercut_short COMMAND repository_powercut_test)
set_tests_properties(repository_powercut_short PROPERTIES LABELS unit ENVIRONMENT STRATA_POWERCUT_TRIALS=100)
# The C API (include/strata/strata.h) from a C program.
add_executable(capi_test capi_test.c)
target_compile_options(capi_test PRIVATE -Wall -Wextra -Werror -std=c11)
target_include_directories(capi_test PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_link_libraries(capi_test PRIVATE strata_capi)
set_target_properties(capi_test PROPERTIES LINKER_LANGUAGE CXX)
add_test(NAME capi COMMAND sh -c "d=$(mktemp -d) && $<TARGET_FILE:capi_test> $d; rc=$?; rm -rf $d; exit $rc")
set_tests_properties(capi PROPERTIES LABELS unit)
# Issue 12: the installed tree, used by a C (pkg-config) and a C++
# (find_package) program with no path but the prefix.
add_test(NAME install COMMAND ${PROJECT_SOURCE_DIR}/tests/install_test.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(install PROPERTIES LABELS system)
