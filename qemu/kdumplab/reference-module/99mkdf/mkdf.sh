#!/bin/sh
# The reference capture (lab only): the lab's disk is ext4 labelled kdump;
# the dump directory is named as kdump-capture names its own.
disk=/dev/disk/by-label/kdump
waited=0
while [ ! -b "$disk" ] && [ "$waited" -lt 90 ]; do
    sleep 1
    waited=$((waited + 1))
done
mkdir -p /run/mkdf
mount -t ext4 "$disk" /run/mkdf || { echo "mkdf: cannot mount $disk"; poweroff -f; }
dir=/run/mkdf/var/crash/127.0.0.1-reference
mkdir -p "$dir"
makedumpfile --dump-dmesg /proc/vmcore "$dir/vmcore-dmesg.txt"
echo "mkdf: log saved, saving to $dir"
if makedumpfile -l -d 31 /proc/vmcore "$dir/vmcore-incomplete"; then
    mv "$dir/vmcore-incomplete" "$dir/vmcore"
    echo "mkdf: dump done"
else
    echo "mkdf: makedumpfile failed"
fi
sync
umount /run/mkdf
poweroff -f
