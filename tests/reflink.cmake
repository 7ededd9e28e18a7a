# Reflink snapshots (issue 18): the pure extent-map comparison as a unit test
# (also under ASan+UBSan), and histories on loop-mounted XFS and btrfs that
# the test makes itself (label "reflink": root and loop devices needed, else
# skipped with the reason).
strata_test(extent_map_diff_test SOURCES extent_map_diff_test.cc LINKS strata_raw)
strata_test(reflink_test SOURCES reflink_test.cc LINKS strata_raw nlohmann_json::nlohmann_json LABEL reflink)
add_dependencies(reflink_test extent-dump)
# strata backup --reflink (issue 18) on loop XFS/btrfs through the CLI.
strata_test(reflink_backup_test SOURCES reflink_backup_test.cc
  LINKS strata_extents nlohmann_json::nlohmann_json LABEL reflink)
add_dependencies(reflink_backup_test strata)
