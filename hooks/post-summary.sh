#!/bin/sh
# kdump-capture example post hook: say on the console what the crash was and
# what was saved, so whoever watches the console knows without opening a file.
#
# Install (either):
#   install -m 0700 post-summary.sh /etc/kdump/post.d/10-summary
#   install -m 0700 post-summary.sh /etc/kdump/post-summary.sh
#     and in /etc/kdump.conf:  kdump_post /etc/kdump/post-summary.sh
#
# $1 is the dump's exit status (0: saved), as Fedora passes it. Everything
# else comes from the KDUMP_CAPTURE_* variables (hooks/README.md). The panic
# line comes from the crashed kernel's memory: it is only ever printed with
# printf '%s', never evaluated or used in a path.
#
# A post hook's exit status is only logged; this one always exits 0.

status=${1:-${KDUMP_CAPTURE_STATUS:-}}
dir=${KDUMP_CAPTURE_DUMP_DIR:-}

printf 'kdump: kernel %s crashed' "${KDUMP_CAPTURE_KERNEL:-(release unknown)}"
if [ -n "${KDUMP_CAPTURE_CRASH_TIME:-}" ]; then
    printf ' at %s' "$KDUMP_CAPTURE_CRASH_TIME"
fi
printf '\n'
printf 'kdump: panic: %s\n' "${KDUMP_CAPTURE_PANIC:-(no panic line in the log)}"

if [ "$status" = 0 ]; then
    printf 'kdump: dump saved to %s\n' "${KDUMP_CAPTURE_TARGET:-the target}"
else
    printf 'kdump: dump NOT saved (status %s) to %s\n' "$status" "${KDUMP_CAPTURE_TARGET:-the target}"
fi

# One line per file in the dump directory: size in bytes, then name.
# (A file still named *-incomplete* was not finished.)
if [ -n "$dir" ] && [ -d "$dir" ]; then
    printf 'kdump: in %s:\n' "$dir"
    for file in "$dir"/*; do
        [ -f "$file" ] || continue
        size=$(wc -c < "$file")
        printf 'kdump: %14s  %s\n' "$size" "${file##*/}"
    done
else
    printf 'kdump: no dump directory\n'
fi

if [ -n "${KDUMP_CAPTURE_MANIFEST:-}" ] && [ -f "$KDUMP_CAPTURE_MANIFEST" ]; then
    printf 'kdump: details (sizes, sha256, steps): %s\n' "$KDUMP_CAPTURE_MANIFEST"
fi
exit 0
