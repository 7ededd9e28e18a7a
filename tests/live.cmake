# formats/nbd against a real qemu-nbd; "unit" so ASan+UBSan run it too.
strata_test(nbd_image_test SOURCES nbd_image_test.cc LINKS strata_nbd nlohmann_json::nlohmann_json)
# Issue 14: backups of running VMs against a real QEMU, qemu-storage-daemon
# and libvirt (label "live": daemons and VMs the tests start and stop by pid).
strata_test(live_qmp_test SOURCES live_qmp_test.cc LINKS strata_live LABEL live LOCK live_vm)
add_dependencies(live_qmp_test strata)
strata_test(live_libvirt_test SOURCES live_libvirt_test.cc LINKS strata_live LABEL live LOCK live_vm)
add_dependencies(live_libvirt_test strata)
# --qga --quiesce-mount with a real qemu-ga on the host freezing a loop mount.
strata_test(live_quiesce_test SOURCES live_quiesce_test.cc LINKS strata_live LABEL live LOCK fsfreeze)
add_dependencies(live_quiesce_test strata)
