#!/bin/busybox sh
# Reference capture: copy /proc/vmcore to the raw dump disk, then power off.
# The dump disk is the block device whose first sector starts with
# CRASHLAB-DUMPDISK; the vmcore goes at 1 MiB, a "CRASHLAB-DONE <size>"
# record into sector 1 when the copy is complete.
. /etc/crashlab/common.sh
setup_base
say "capture kernel $(uname -r) up at $(uptime_s)s"
load_modules
[ -e /proc/vmcore ] || fail "no /proc/vmcore in the capture kernel"
size=$(stat -c %s /proc/vmcore)
say "vmcore size $size"

find_dump_disk() {
	for _ in $(seq 1 60); do
		for b in /sys/block/*; do
			name=${b##*/}
			case $name in loop* | ram* | zram*) continue ;; esac
			[ -b "/dev/$name" ] || continue
			magic=$(dd if="/dev/$name" bs=512 count=1 2>/dev/null | head -c 17)
			if [ "$magic" = "CRASHLAB-DUMPDISK" ]; then
				echo "/dev/$name"
				return 0
			fi
		done
		sleep 1
	done
	return 1
}

net_check() {
	[ -n "$CRASHLAB_NET_HOST" ] || return 0
	ifc=$(ls /sys/class/net | grep -v '^lo$' | head -n1)
	[ -n "$ifc" ] || { echo "CRASHLAB-NET: FAIL no interface"; return 0; }
	ip link set "$ifc" up
	for _ in $(seq 1 30); do
		[ "$(cat /sys/class/net/$ifc/carrier 2>/dev/null)" = "1" ] && break
		sleep 1
	done
	echo "CRASHLAB-NET: $ifc carrier=$(cat /sys/class/net/$ifc/carrier 2>/dev/null) driver=$(basename "$(readlink /sys/class/net/$ifc/device/driver)")"
	ip addr add 10.0.2.15/24 dev "$ifc"
	# nc does not half-close; the host hangs up after 64 KiB, timeout bounds it
	{ echo "CRASHLAB-NET-OK $ifc"; head -c 65536 /proc/vmcore; } \
		| timeout 15 nc -w 10 "$CRASHLAB_NET_HOST" "$CRASHLAB_NET_PORT"
	echo "CRASHLAB-NET: nc done rc=$?"
}

net_check
dev=$(find_dump_disk) || fail "dump disk not found after 60s; block devices: $(ls /sys/block | tr '\n' ' ')\
scsi hosts: $(ls /sys/class/scsi_host 2>/dev/null | wc -l), sas phys: $(ls /sys/class/sas_phy 2>/dev/null | wc -l),\
 sas end devices: $(ls /sys/class/sas_end_device 2>/dev/null | wc -l)"
say "dumping to $dev at $(uptime_s)s"
dd if=/proc/vmcore of="$dev" bs=1M seek=1 2>/tmp/dd.err || fail "dd failed: $(cat /tmp/dd.err)"
sync
printf 'CRASHLAB-DONE %s\n' "$size" | dd of="$dev" bs=512 seek=1 count=1 conv=sync 2>/dev/null
sync
say "capture done at $(uptime_s)s"
echo "CRASHLAB-CAPTURE-DONE size=$size"
poweroff -f
