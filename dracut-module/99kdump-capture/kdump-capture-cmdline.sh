#!/bin/sh
# cmdline hook (images without systemd), at 99: after parse-root-opts read
# root=. A capture kernel started with no root= (the image carries what it
# needs) must not stop in dracut's "No or empty root= argument"; the agent
# then runs from pre-mount.
if [ -e /proc/vmcore ] && [ -z "$root" ]; then
    root=kdump-capture
    rootok=1
fi
