"""QEMU crash lab for kdump-capture: boot Debian kernels, panic, capture /proc/vmcore."""
