"""What runs in the first kernel: building the capture initramfs (``build-initrd``)."""
