# Backups (issue 5): archives, pipeline, repository and CLI.
strata_test(backup_archive_test SOURCES backup_archive_test.cc LINKS strata_backup)
strata_test(backup_pipeline_test SOURCES backup_pipeline_test.cc LINKS strata_backup)
