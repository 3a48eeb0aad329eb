#!/bin/sh
# Last resort when the agent could not run or died: take kdump.conf's
# failure_action (default reboot) with plain tools. Only what needs no agent:
# dump_to_rootfs cannot be done here and reboots.
conf=/etc/kdump.conf
action=reboot
final=reboot
while read -r key value _; do
    case $key in
        failure_action | default) action=$value ;;
        final_action) final=$value ;;
    esac
done < "$conf"

say() { echo "kdump-capture: $*" > /dev/kmsg 2>/dev/null || echo "kdump-capture: $*"; }

power() {
    sync
    if [ -d /run/systemd/system ]; then
        systemctl "$1" -f
        sleep 30
    fi
    "$1" -f
}

say "the capture agent failed; failure action: $action"
case $action in
    halt | poweroff | reboot) power "$action" ;;
    shell)
        PS1='kdump:${PWD}# ' /bin/sh -i -l < /dev/console > /dev/console 2>&1
        case $final in halt | poweroff | reboot) power "$final" ;; *) power reboot ;; esac
        ;;
    boot) systemctl --no-block isolate initrd-switch-root.target ;;
    *) power reboot ;;
esac
