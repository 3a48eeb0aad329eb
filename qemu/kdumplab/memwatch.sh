#!/bin/bash
# Lab diagnostic, a kdump_pre hook (crashlab floor --memwatch): every 2 s the
# capture kernel's /proc/meminfo and /proc/vmstat counters, every 10 s each
# process's RSS (anon/file, kB), the slab caches of 400 KiB or more and the
# vmalloc areas of 256 KiB or more, on /dev/kmsg so the console has them with
# its timestamps. It runs in the background (the agent notes that it left a
# process running) and costs about 0.4 MiB, and one `sleep` a round.
echo "memwatch: min_free_kbytes=$(</proc/sys/vm/min_free_kbytes) boost=$(</proc/sys/vm/watermark_boost_factor) thp=$(</sys/kernel/mm/transparent_hugepage/enabled)" > /dev/kmsg
watch() {
    local n=0 k v u line name anon file
    while :; do
        line="memwatch:"
        while read -r k v u; do
            case $k in
            MemFree:|MemAvailable:|Cached:|Shmem:|AnonPages:|Dirty:|Writeback:|Slab:|SUnreclaim:|PageTables:|KernelStack:|Mapped:|Active\(file\):|Inactive\(file\):|VmallocUsed:|Percpu:|Unevictable:)
                line+=" ${k%:}=${v}k" ;;
            esac
        done < /proc/meminfo
        while read -r k v; do
            case $k in
            pgmajfault|workingset_refault_file|pgscan_direct|oom_kill|allocstall_normal|allocstall_dma32)
                line+=" $k=$v" ;;
            esac
        done < /proc/vmstat
        echo "$line" > /dev/kmsg
        if (( n % 5 == 0 )); then
            line="memwatch: rss"
            for s in /proc/[0-9]*/status; do
                name= anon=0 file=0
                while read -r k v u; do
                    case $k in
                    Name:) name=$v ;;
                    RssAnon:) anon=$v ;;
                    RssFile:) file=$v ;;
                    esac
                done < "$s" 2>/dev/null
                (( anon + file > 1024 )) && line+=" $name=${anon}a/${file}f"
            done
            echo "$line" > /dev/kmsg
            line="memwatch: slab"
            while read -r name active num size rest; do
                [[ $name == slabinfo || $name == \#* ]] && continue
                (( num * size >= 400 * 1024 )) && line+=" $name=$((num * size / 1024))k"
            done < /proc/slabinfo
            echo "$line" > /dev/kmsg
            line="memwatch: vmalloc"
            while read -r range size caller rest; do
                caller=${caller%%+*}
                [[ $rest == *pages=* ]] && (( size >= 262144 )) && line+=" $caller=$((size / 1024))k"
            done < /proc/vmallocinfo
            echo "$line" > /dev/kmsg
        fi
        n=$((n + 1))
        sleep 2
    done
}
watch < /dev/null > /dev/null 2>&1 &
exit 0
