#!/bin/sh
# kdump-capture example post hook: keep a second copy of the crashed kernel's
# log (vmcore-dmesg.txt) somewhere other than the dump target, so the most
# useful few KiB survive even if the target is lost or the dump is removed.
#
# Install (either):
#   install -m 0700 post-copy-dmesg.sh /etc/kdump/post.d/20-copy-dmesg
#   kdump_post /etc/kdump/post-copy-dmesg.sh     (in /etc/kdump.conf)
#
# Where the copy goes: edit DEST below (or set KDUMP_DMESG_COPY_TO in the
# environment the agent runs with).
#   * a directory, e.g. a second disk mounted in the capture kernel: the log is
#     copied there as <dump directory's name>-vmcore-dmesg.txt (mode 0600);
#   * a character device, e.g. a serial console /dev/ttyS1 that a console
#     server records: the log is written onto it between two marker lines.
#
# The log holds what the crashed kernel printed: keep the copy private
# (umask 077), and never run or evaluate what is in it.

DEST=${KDUMP_DMESG_COPY_TO:-/dev/ttyS1}

umask 077
dir=${KDUMP_CAPTURE_DUMP_DIR:-}
log=
for name in vmcore-dmesg.txt vmcore-dmesg-incomplete.txt; do
    if [ -n "$dir" ] && [ -f "$dir/$name" ]; then
        log=$dir/$name
        break
    fi
done
if [ -z "$log" ]; then
    printf 'copy-dmesg: no vmcore-dmesg.txt in %s: nothing to copy\n' "${dir:-(no dump directory)}"
    exit 0
fi

if [ -c "$DEST" ]; then
    {
        printf '\n==== kdump: %s from %s ====\n' "${log##*/}" "${dir##*/}"
        cat "$log"
        printf '==== kdump: end of %s ====\n' "${log##*/}"
    } > "$DEST" || exit 1
    printf 'copy-dmesg: %s written to %s\n' "${log##*/}" "$DEST"
    exit 0
fi

mkdir -p "$DEST" || exit 1
copy=$DEST/${dir##*/}-${log##*/}
cp "$log" "$copy.tmp" && sync && mv "$copy.tmp" "$copy" || exit 1
printf 'copy-dmesg: %s copied to %s\n' "${log##*/}" "$copy"
