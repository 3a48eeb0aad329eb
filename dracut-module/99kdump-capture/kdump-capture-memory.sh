#!/bin/sh
# Run before the agent (the unit's ExecStartPre, the hook): give back memory
# a capture kernel holds for what it never does.
# Transparent huge pages: khugepaged raised min_free_kbytes (2.9 MiB of the
# 75 MiB a 128M reservation leaves kept free), and the kernel computes it
# again once they are off, as Fedora's capture command line has them
# (transparent_hugepage=never). Watermark boosting (2 MiB more reclaimed after
# a fragmenting allocation) serves compaction, which a capture needs neither.
echo never > /sys/kernel/mm/transparent_hugepage/enabled 2> /dev/null
echo 0 > /proc/sys/vm/watermark_boost_factor 2> /dev/null
exit 0
