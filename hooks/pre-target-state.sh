#!/bin/sh
# kdump-capture example pre hook: log the state of the dump target and of the
# capture kernel's memory before the dump starts, so a failed dump's log says
# what the target looked like (not there yet, full, read-only, ...).
#
# Install it in pre.d, where a failure is only logged:
#   install -m 0700 pre-target-state.sh /etc/kdump/pre.d/10-target-state
# As kdump_pre it would work too, but beware Fedora's rule: a kdump_pre that
# exits non-zero means NO dump is saved (the final action follows). This
# hook always exits 0 for that reason.
#
# KDUMP_CAPTURE_TARGET is KIND:PLACE, e.g. local:/var/crash or raw:/dev/sdb1
# (hooks/README.md). Before the dump the target may not be mounted yet.

target=${KDUMP_CAPTURE_TARGET:-}
kind=${target%%:*}
place=${target#*:}
printf 'target-state: target %s (stage %s)\n' "${target:-(not known)}" "${KDUMP_CAPTURE_STAGE:-?}"

case $kind in
raw)
    if [ -b "$place" ]; then
        printf 'target-state: %s is a block device:\n' "$place"
        ls -lL "$place"
    else
        printf 'target-state: %s is not a block device (yet)\n' "$place"
    fi
    ;;
'')
    ;;
*)
    # The nearest directory that exists on the way to PLACE, and its filesystem.
    dir=$place
    while [ -n "$dir" ] && [ ! -d "$dir" ]; do
        case $dir in
        */*) dir=${dir%/*} ;;
        *) dir= ;;
        esac
    done
    [ -n "$dir" ] || dir=/
    if [ "$dir" != "$place" ]; then
        printf 'target-state: %s does not exist (yet); nearest is %s\n' "$place" "$dir"
    fi
    printf 'target-state: free space at %s:\n' "$dir"
    df -k "$dir"
    ;;
esac

# How much memory the capture kernel has left for the dump.
sed -n -e 's/^MemTotal: */target-state: MemTotal /p' \
    -e 's/^MemAvailable: */target-state: MemAvailable /p' /proc/meminfo
exit 0
