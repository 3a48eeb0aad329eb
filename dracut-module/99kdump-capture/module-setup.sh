#!/bin/bash
# dracut module for the kdump-capture agent (dracut.modules(7)).
#
# `kdump-capture build-initrd` reads kdump.conf and prepares a plan directory
# ($KDUMP_CAPTURE_PLAN) with everything decided there, so this file only
# installs: the config already rewritten with persistent device names, the
# list of files (hooks, extra_bins, the target's tools), kernel drivers,
# the dracut modules the target needs, and which files of the frozen agent
# ($KDUMP_CAPTURE_AGENT, a PyInstaller onedir tree) the target uses.

# Only when asked for (--add/-m): a normal initramfs never gets it.
check() {
    [[ -d $KDUMP_CAPTURE_PLAN && -x $KDUMP_CAPTURE_AGENT/kdump-capture-agent ]] || return 1
    return 255
}

depends() {
    cat "$KDUMP_CAPTURE_PLAN/depends"
    return 0
}

installkernel() {
    # hostonly='': the generic drivers go in whatever the build host has
    local _drivers
    mapfile -t _drivers < "$KDUMP_CAPTURE_PLAN/drivers"
    hostonly='' instmods "${_drivers[@]}"
}

_install_agent() {
    local _dest=/usr/lib/kdump-capture _rel
    # plain files in one copy; each ELF file with the host libraries it links
    inst_dir "$_dest"
    (cd "$KDUMP_CAPTURE_AGENT" && xargs -r -d '\n' cp -a --parents -t "$initdir$_dest") \
        < "$KDUMP_CAPTURE_PLAN/agent.data" || dfatal "kdump-capture: copying the agent failed"
    while IFS= read -r _rel; do
        inst_binary "$KDUMP_CAPTURE_AGENT/$_rel" "$_dest/$_rel" \
            || dfatal "kdump-capture: cannot install $_rel"
    done < "$KDUMP_CAPTURE_PLAN/agent.elf"
    ln_r "$_dest/kdump-capture-agent" /usr/bin/kdump-capture-agent
}

_install_capture_units() {
    inst_simple "$moddir/kdump-capture.service" "$systemdsystemunitdir/kdump-capture.service"
    inst_simple "$moddir/kdump-capture-failure.service" \
        "$systemdsystemunitdir/kdump-capture-failure.service"
    $SYSTEMCTL -q --root "$initdir" add-wants initrd.target kdump-capture.service
    # as Fedora: the initramfs neither cleans up nor re-reads /etc for the
    # real root while a dump is taken (the agent switches itself for `boot`)
    local _unit
    for _unit in initrd-cleanup.service initrd-parse-etc.service; do
        mkdir -p "$initdir$systemdsystemunitdir/$_unit.d"
        printf '[Unit]\nConditionPathExists=!/proc/vmcore\n' \
            > "$initdir$systemdsystemunitdir/$_unit.d/kdump-capture.conf"
    done
    # journald: nothing kept on disk, everything on the console
    mkdir -p "$initdir/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToConsole=yes\n' \
        > "$initdir/etc/systemd/journald.conf.d/kdump-capture.conf"
}

# ssh and nfs targets. dracut's network module brings systemd-networkd
# (build-initrd asks for it), whose generator reads ip= from /proc/cmdline
# only, never the image's /etc/cmdline.d: so the DHCP setting is a .network
# file, and the capture waits for network-online.target (one NIC configured,
# --any; the agent then waits kdump_capture_network_timeout for the server).
_install_network_units() {
    inst_simple "$moddir/90-kdump-capture.network" /etc/systemd/network/90-kdump-capture.network
    mkdir -p "$initdir$systemdsystemunitdir/kdump-capture.service.d" \
        "$initdir$systemdsystemunitdir/systemd-networkd-wait-online.service.d"
    printf '[Unit]\nWants=network-online.target\nAfter=network-online.target\n' \
        > "$initdir$systemdsystemunitdir/kdump-capture.service.d/network.conf"
    printf '[Service]\nExecStart=\nExecStart=%s/systemd-networkd-wait-online --any\n' \
        "$systemdutildir" \
        > "$initdir$systemdsystemunitdir/systemd-networkd-wait-online.service.d/kdump-capture.conf"
}

install() {
    _install_agent
    inst_simple "$KDUMP_CAPTURE_PLAN/kdump.conf" /etc/kdump.conf
    # the host keys propagate recorded, where the agent reads them (whatever --kdump-dir was)
    [[ -s $KDUMP_CAPTURE_PLAN/known_hosts ]] \
        && inst_simple "$KDUMP_CAPTURE_PLAN/known_hosts" /etc/kdump/known_hosts
    inst_script "$moddir/kdump-capture-failure.sh" /usr/lib/kdump-capture/failure.sh
    inst_script "$moddir/kdump-capture-memory.sh" /usr/lib/kdump-capture/memory.sh
    # hooks, hook directories, extra_bins, the target's and actions' tools
    local _file
    while IFS= read -r _file; do
        inst "$_file" || dfatal "kdump-capture: cannot install $_file"
    done < "$KDUMP_CAPTURE_PLAN/files"
    while IFS= read -r _file; do
        inst_multiple -o "$_file"
    done < "$KDUMP_CAPTURE_PLAN/tools"
    while IFS= read -r _file; do
        inst_dir "$_file"
    done < "$KDUMP_CAPTURE_PLAN/dirs"
    [[ -s $KDUMP_CAPTURE_PLAN/cmdline.conf ]] \
        && inst_simple "$KDUMP_CAPTURE_PLAN/cmdline.conf" /etc/cmdline.d/90kdump-capture.conf

    if dracut_module_included "systemd"; then
        _install_capture_units
        [[ -e $KDUMP_CAPTURE_PLAN/network ]] && _install_network_units
    else
        inst_hook cmdline 99 "$moddir/kdump-capture-cmdline.sh"
        inst_hook pre-mount 99 "$moddir/kdump-capture-hook.sh"
        inst_hook pre-pivot 90 "$moddir/kdump-capture-hook.sh"
    fi
    [[ -e $KDUMP_CAPTURE_PLAN/switch-root ]] || dracut_no_switch_root
}
