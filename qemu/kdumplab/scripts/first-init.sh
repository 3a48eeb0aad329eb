#!/bin/busybox sh
# First kernel: arm kdump, build the requested memory contents, then panic.
# Workload sizes arrive as KEY=VALUE kernel parameters (init's environment).
. /etc/crashlab/common.sh
setup_base
say "first kernel $(uname -r) up at $(uptime_s)s"
load_modules

: "${CACHE_MB:=0}" "${SHM_MB:=0}" "${ANON_MB:=0}" "${ZERO_MB:=0}"
: "${HUGETLB_PAGES:=0}" "${HWPOISON_PAGES:=0}" "${SLAB_FILES:=0}"
: "${THP:=}" "${PANIC_COMM:=crashlab-panic}"

arm_kdump() {
	append="$(cat /etc/crashlab/capture-cmdline)"
	[ "$(cat /sys/kernel/kexec_crash_size)" != "0" ] || fail "no crashkernel reservation (kexec_crash_size=0)"
	if ! kexec -p /boot/vmlinuz --initrd=/boot/capture.img --append="$append" 2>/tmp/kexec.err; then
		say "kexec_load failed: $(cat /tmp/kexec.err); trying kexec_file_load"
		kexec -s -p /boot/vmlinuz --initrd=/boot/capture.img --append="$append" 2>/tmp/kexec.err \
			|| fail "kexec -p failed: $(cat /tmp/kexec.err)"
	fi
	[ "$(cat /sys/kernel/kexec_crash_loaded)" = "1" ] || fail "kexec_crash_loaded is not 1"
	# the images now live in the reservation; free their initramfs copies
	rm -f /boot/vmlinuz /boot/capture.img
	say "kdump armed (crash size $(cat /sys/kernel/kexec_crash_size)) at $(uptime_s)s"
}

page_cache() {
	[ "$CACHE_MB" -gt 0 ] || return 0
	dev=$(findfs LABEL=crashlab-work) || fail "workload disk (LABEL=crashlab-work) not found"
	mkdir -p /mnt/data
	mount -t ext4 "$dev" /mnt/data || fail "mount ext4 $dev failed"
	crashlab-helper fill-file /mnt/data/cache.bin $((CACHE_MB * 256)) CRASHLAB-CACHE || fail "page cache fill failed"
	sync
	cat /mnt/data/cache.bin > /dev/null
	echo "CRASHLAB-RESULT cache_pages=$((CACHE_MB * 256))"
}

shmem() {
	mkdir -p /mnt/shm
	mount -t tmpfs -o size=90% tmpfs /mnt/shm || fail "tmpfs mount failed"
	if [ "$SHM_MB" -gt 0 ]; then
		crashlab-helper fill-file /mnt/shm/shm.bin $((SHM_MB * 256)) CRASHLAB-SHM || fail "shmem fill failed"
		echo "CRASHLAB-RESULT shm_pages=$((SHM_MB * 256))"
	fi
	if [ "$SLAB_FILES" -gt 0 ]; then
		crashlab-helper mkfiles /mnt/shm/slab "$SLAB_FILES" || fail "slab files failed"
	fi
}

anon_hold() {
	if [ "$HUGETLB_PAGES" -gt 0 ]; then
		echo "$HUGETLB_PAGES" > /proc/sys/vm/nr_hugepages
		echo "CRASHLAB-RESULT hugetlb_reserved=$(cat /proc/sys/vm/nr_hugepages)"
	fi
	[ $((ANON_MB + ZERO_MB + HUGETLB_PAGES)) -gt 0 ] || return 0
	rm -f /tmp/hold.ready
	crashlab-helper hold $((ANON_MB * 256)) $((ZERO_MB * 256)) "$HUGETLB_PAGES" /tmp/hold.ready &
	i=0
	while [ ! -e /tmp/hold.ready ]; do
		i=$((i + 1))
		[ $i -lt 1200 ] || fail "memory holder did not get ready"
		kill -0 $! 2>/dev/null || fail "memory holder died"
		usleep 100000
	done
	echo "CRASHLAB-RESULT holder_pid=$!"
}

hwpoison() {
	[ "$HWPOISON_PAGES" -gt 0 ] || return 0
	crashlab-helper hwpoison "$HWPOISON_PAGES" CRASHLAB-HWPOISON
}

arm_kdump
[ -z "$THP" ] || echo "$THP" > /sys/kernel/mm/transparent_hugepage/enabled
# "always madvise [never]" -> "never" (RESULT values must not contain spaces)
echo "CRASHLAB-RESULT thp=$(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
page_cache
shmem
anon_hold
hwpoison
say "workload done at $(uptime_s)s"
sed 's/^/CRASHLAB-MEMINFO /' /proc/meminfo
sync
echo "CRASHLAB-PANIC comm=$PANIC_COMM"
# a separate process names itself and panics, so the dump has a known culprit
sh -c "echo $PANIC_COMM > /proc/self/comm; echo c > /proc/sysrq-trigger"
fail "still alive after sysrq-trigger"
