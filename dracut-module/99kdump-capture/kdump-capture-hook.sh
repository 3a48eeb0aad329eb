#!/bin/sh
# pre-mount and pre-pivot hook (images without systemd; sourced by dracut's
# init). With a root= the agent runs at pre-pivot, where Fedora's kdump.sh
# ran; without one (root=kdump-capture, set by the cmdline hook) there is no
# root to wait for and it runs at pre-mount. It runs once. The agent takes the
# final or failure action itself; for `boot` it mounts /sysroot and returns,
# and dracut's init switches root.
if [ -e /proc/vmcore ] && [ ! -e /run/kdump-capture.ran ]; then
    case $root in
        kdump-capture) _kdump_capture_now=1 ;;
        *) [ "${hookdir##*/}" != pre-mount ] && _kdump_capture_now=1 ;;
    esac
fi
if [ -n "$_kdump_capture_now" ]; then
    : > /run/kdump-capture.ran
    /usr/lib/kdump-capture/memory.sh
    /usr/lib/kdump-capture/kdump-capture-agent run \
        || warn "kdump-capture: the agent exited with $?"
    # still here and not switching root: the agent could not act
    [ -d "$NEWROOT/proc" ] || /usr/lib/kdump-capture/failure.sh
fi
unset _kdump_capture_now
