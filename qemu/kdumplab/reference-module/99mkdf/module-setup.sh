#!/bin/bash
# Lab only: a reference capture image that runs Debian's makedumpfile, the
# floor kdump-capture's own image is measured against (qemu/kdumplab/floor.py).
# It does what a kdumpbase-like capture does and no more: wait for the dump
# disk by its label, mount it, save the log, filter the dump, power off.

check() {
    return 255  # only when named with -m
}

depends() {
    echo base shutdown fs-lib
}

installkernel() {
    hostonly='' instmods virtio_pci virtio_blk ext4 crc32c_generic
}

install() {
    inst_multiple makedumpfile mount umount sync sleep mkdir mv poweroff
    inst_script "$moddir/mkdf.sh" /usr/lib/mkdf/mkdf.sh
    inst_simple "$moddir/mkdf.service" "$systemdsystemunitdir/mkdf.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target mkdf.service
    mkdir -p "$initdir/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToConsole=yes\n' \
        > "$initdir/etc/systemd/journald.conf.d/mkdf.conf"
    dracut_no_switch_root
}
