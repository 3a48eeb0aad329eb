/*
 * crashlab-helper: tiny static guest tool that produces recognisable memory.
 *
 * Busybox alone cannot fill anonymous memory with a per-page pattern, hold
 * it mapped, poison pages or create many files quickly under TCG, so the
 * lab builds this once with `gcc -static -O2` into its cache.
 *
 * Every patterned 4 KiB page is filled with "<PREFIX>-<pageno %08d>|"
 * repeated, so a host-side scan can count pages by their first bytes.
 *
 *   crashlab-helper fill-file PATH PAGES PREFIX   write PAGES patterned pages
 *   crashlab-helper hold ANON ZERO HUGE READYFILE  map memory, then sleep
 *   crashlab-helper hwpoison PAGES PREFIX         poison PAGES pages via children
 *   crashlab-helper mkfiles DIR COUNT             create COUNT empty files
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define HUGE (2UL * 1024 * 1024)

#ifndef MADV_HWPOISON
#define MADV_HWPOISON 100
#endif

static void fill_page(char *page, const char *prefix, unsigned long no)
{
	char unit[64];
	int len = snprintf(unit, sizeof(unit), "%s-%08lu|", prefix, no);
	unsigned long off = 0;

	while (off + (unsigned long)len <= PAGE) {
		memcpy(page + off, unit, (size_t)len);
		off += (unsigned long)len;
	}
	memset(page + off, '.', PAGE - off);
}

static int fill_file(const char *path, unsigned long pages, const char *prefix)
{
	static char buf[PAGE];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0) {
		perror(path);
		return 1;
	}
	for (unsigned long i = 0; i < pages; i++) {
		fill_page(buf, prefix, i);
		if (write(fd, buf, PAGE) != (ssize_t)PAGE) {
			perror("write");
			return 1;
		}
	}
	/* leave no stale copy of the last pattern in our own buffer */
	memset(buf, 0, sizeof(buf));
	fsync(fd);
	close(fd);
	printf("CRASHLAB-INFO wrote %s (%lu pages)\n", path, pages);
	return 0;
}

static char *map_anon(unsigned long bytes, int extra)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
	return p == MAP_FAILED ? NULL : (char *)p;
}

static int hold(unsigned long anon, unsigned long zero, unsigned long huge,
		const char *ready)
{
	unsigned long huge_ok = 0;

	if (anon) {
		char *a = map_anon(anon * PAGE, 0);
		if (!a) {
			perror("mmap anon");
			return 1;
		}
		for (unsigned long i = 0; i < anon; i++)
			fill_page(a + i * PAGE, "CRASHLAB-ANON", i);
	}
	if (zero) {
		char *z = map_anon(zero * PAGE, 0);
		if (!z) {
			perror("mmap zero");
			return 1;
		}
		/* a write faults in a real, zero-filled page (not the zero page) */
		for (unsigned long i = 0; i < zero; i++)
			((volatile char *)z)[i * PAGE] = 0;
	}
	if (huge) {
		char *h = map_anon(huge * HUGE, MAP_HUGETLB);
		if (!h) {
			perror("mmap hugetlb");
		} else {
			for (unsigned long i = 0; i < huge * (HUGE / PAGE); i++)
				fill_page(h + i * PAGE, "CRASHLAB-HUGE", i);
			huge_ok = huge;
		}
	}
	printf("CRASHLAB-RESULT anon_pages=%lu zero_pages=%lu hugetlb_pages=%lu\n",
	       anon, zero, huge_ok);
	fflush(stdout);
	int fd = open(ready, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0)
		close(fd);
	for (;;)
		pause();
	return 0;
}

static int poison_one(unsigned long no, const char *prefix)
{
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		char *p = map_anon(PAGE, 0);
		if (!p)
			_exit(2);
		fill_page(p, prefix, no);
		if (madvise(p, PAGE, MADV_HWPOISON) != 0)
			_exit(3);
		/* touching a poisoned page raises SIGBUS; we may be killed earlier */
		_exit(0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		return -1;
	return 0;
}

static int hwpoison(unsigned long pages, const char *prefix)
{
	unsigned long ok = 0;

	for (unsigned long i = 0; i < pages; i++)
		if (poison_one(i, prefix) == 0)
			ok++;
	printf("CRASHLAB-RESULT hwpoison_pages=%lu\n", ok);
	return 0;
}

static int mkfiles(const char *dir, unsigned long count)
{
	char path[4096];

	mkdir(dir, 0755);
	for (unsigned long i = 0; i < count; i++) {
		snprintf(path, sizeof(path), "%s/crashlab-slab-%08lu", dir, i);
		int fd = open(path, O_WRONLY | O_CREAT, 0644);
		if (fd < 0) {
			perror(path);
			return 1;
		}
		close(fd);
	}
	printf("CRASHLAB-RESULT slab_files=%lu\n", count);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 5 && !strcmp(argv[1], "fill-file"))
		return fill_file(argv[2], strtoul(argv[3], NULL, 0), argv[4]);
	if (argc == 6 && !strcmp(argv[1], "hold"))
		return hold(strtoul(argv[2], NULL, 0), strtoul(argv[3], NULL, 0),
			    strtoul(argv[4], NULL, 0), argv[5]);
	if (argc == 4 && !strcmp(argv[1], "hwpoison"))
		return hwpoison(strtoul(argv[2], NULL, 0), argv[3]);
	if (argc == 4 && !strcmp(argv[1], "mkfiles"))
		return mkfiles(argv[2], strtoul(argv[3], NULL, 0));
	fprintf(stderr, "usage: see helper.c\n");
	return 2;
}
