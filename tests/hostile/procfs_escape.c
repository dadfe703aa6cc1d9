/* procfs_escape.c — a guest that tries to reach the host through /proc.
 *
 * Usage: procfs_escape GRANT OUTSIDE HOST_PID
 *
 * GRANT is a granted directory, OUTSIDE a host directory that is not
 * granted (it holds a file "secret"), HOST_PID the pid of a real host
 * process (the minikvm process itself).  Each attempt prints "NAME: ERRNO"
 * (attempts.h); the "leak-*" lines print 1 when something of the host
 * showed, 0 when not.  Then it abuses the synthesized files themselves:
 * writes, tiny getdents buffers, huge offsets, bad pointers, a maps file
 * of more than a thousand lines.
 */
#define _GNU_SOURCE
#include "attempts.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

static const char *outside;
/* pointers the guest does not own: volatile, so the compiler cannot see them */
static void *volatile bad_pointer = (void *)16;
static void *volatile kernel_pointer = (void *)0xffff800000000000UL;

/* 1 if the file at PATH can be read and its text holds NEEDLE (or, with
 * NEEDLE NULL, if it can be read at all). */
static int readable_with(const char *path, const char *needle)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return 0;
    static char data[1 << 20];
    ssize_t total = 0, got;
    while (total < (ssize_t)sizeof data - 1 &&
           (got = read(fd, data + total, sizeof data - 1 - total)) > 0)
        total += got;
    close(fd);
    data[total] = '\0';
    return needle == NULL || strstr(data, needle) != NULL;
}

/* 1 if readlink of PATH names OUTSIDE */
static int link_names_outside(const char *path)
{
    char target[4096];
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return 0;
    target[n] = '\0';
    return strstr(target, outside) != NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: procfs_escape GRANT OUTSIDE HOST_PID\n");
        return 2;
    }
    const char *grant = argv[1];
    outside = argv[2];
    const char *host_pid = argv[3];
    char path[4096];

    /* the magic links lead only into the guest's own view */
    try_open("root-shadow", "/proc/self/root/etc/shadow", O_RDONLY);
    try_open("root-outside", join("/proc/self/root", join(outside, "secret")), O_RDONLY);
    try_open("thread-self-root", join("/proc/thread-self/root", join(outside, "secret")),
             O_RDONLY);
    snprintf(path, sizeof path, "/proc/%d/task/%d/root%s/secret", getpid(), getpid(), outside);
    try_open("task-root-outside", path, O_RDONLY);
    try_open("cwd-dotdot", "/proc/self/cwd/../outside/secret", O_RDONLY);
    try_open("root-dotdot", join("/proc/self/root/../../..", join(outside, "secret")), O_RDONLY);
    try_open("fd-root", "/proc/self/root", O_RDONLY | O_DIRECTORY);
    int granted = open(grant, O_RDONLY | O_DIRECTORY);
    snprintf(path, sizeof path, "/proc/self/fd/%d/../outside/secret", granted);
    try_open("fd-dir-dotdot", path, O_RDONLY);
    snprintf(path, sizeof path, "/proc/self/fd/%d/inside", granted);
    try_open("fd-dir-inside", path, O_RDONLY);
    report("openat-root", openat(open("/proc/self/root", O_PATH), join(outside + 1, "secret"),
                                 O_RDONLY));

    /* other processes: pid 1, the host's pids (minikvm's own) */
    try_open("pid1-environ", "/proc/1/environ", O_RDONLY);
    try_open("pid1-root", "/proc/1/root/etc/passwd", O_RDONLY);
    try_open("host-environ", join(join("/proc", host_pid), "environ"), O_RDONLY);
    try_open("host-cmdline", join(join("/proc", host_pid), "cmdline"), O_RDONLY);
    try_open("host-maps", join(join("/proc", host_pid), "maps"), O_RDONLY);
    struct stat st;
    report("host-stat", stat(join("/proc", host_pid), &st));
    try_open("kcore", "/proc/kcore", O_RDONLY);
    try_open("sysrq", "/proc/sysrq-trigger", O_WRONLY);
    try_open("self-mem", "/proc/self/mem", O_RDONLY);
    try_open("sys-kernel-other", "/proc/sys/kernel/core_pattern", O_RDONLY);
    int found_host = 0, entries = 0;
    DIR *proc = opendir("/proc");
    for (struct dirent *entry; proc && (entry = readdir(proc)); entries++)
        found_host |= strcmp(entry->d_name, host_pid) == 0 || strcmp(entry->d_name, "1") == 0;
    printf("leak-proc-listing: %d\n", found_host || entries == 0);

    /* nothing the guest reads names the outside directory */
    printf("leak-mountinfo: %d\n", readable_with("/proc/self/mountinfo", outside));
    printf("leak-mounts: %d\n", readable_with("/proc/mounts", outside));
    printf("leak-maps: %d\n", readable_with("/proc/self/maps", outside));
    printf("leak-stdin-link: %d\n", link_names_outside("/proc/self/fd/0"));
    printf("leak-dev-stdin-link: %d\n", link_names_outside("/dev/fd/0"));
    printf("leak-environ-host: %d\n", readable_with("/proc/self/environ", "MINIKVM_HOST_ONLY"));
    printf("leak-cmdline-host: %d\n", readable_with("/proc/self/cmdline", "python"));

    /* writes into /proc are refused, however asked */
    try_open("write-status", "/proc/self/status", O_WRONLY);
    try_open("rdwr-maps", "/proc/self/maps", O_RDWR);
    try_open("trunc-environ", "/proc/self/environ", O_RDONLY | O_TRUNC);
    try_open("write-hostname", "/proc/sys/kernel/hostname", O_WRONLY);
    try_open("write-overcommit", "/proc/sys/vm/overcommit_memory", O_WRONLY);
    try_open("create-in-proc", "/proc/self/new", O_WRONLY | O_CREAT);
    try_open("create-excl", "/proc/self/status", O_WRONLY | O_CREAT | O_EXCL);
    try_open("write-dir", "/proc/self", O_WRONLY);
    report("mkdir-proc", mkdir("/proc/self/x", 0755));
    report("unlink-proc", unlink("/proc/self/status"));
    report("rmdir-proc", rmdir("/proc/self/fd"));
    report("rename-proc", rename("/proc/self/status", "/proc/self/s"));
    report("symlink-proc", symlink("/etc/passwd", "/proc/self/l"));
    report("chmod-proc", chmod("/proc/self/status", 0777));
    report("truncate-proc", truncate("/proc/self/status", 0));
    report("access-write", access("/proc/self/status", W_OK));
    int status = open("/proc/self/status", O_RDONLY);
    report("write-ro-fd", write(status, "x", 1));
    report("pwrite-ro-fd", pwrite(status, "x", 1, 0));
    report("ftruncate-proc", ftruncate(status, 0));
    report("fchmod-proc", fchmod(status, 0777));
    report("mmap-proc", mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, status, 0) == MAP_FAILED ? -1 : 0);

    /* reads at huge offsets, lseek beyond the end and before the start */
    char buffer[64];
    report("lseek-huge", lseek(status, 1L << 62, SEEK_SET) < 0 ? -1 : 0);
    printf("read-huge: %zd\n", read(status, buffer, sizeof buffer));
    printf("pread-huge: %zd\n", pread(status, buffer, sizeof buffer, (1L << 62)));
    report("pread-negative", pread(status, buffer, sizeof buffer, -1));
    report("lseek-negative", lseek(status, -5, SEEK_SET));
    report("lseek-end", lseek(status, 0, SEEK_END));
    report("lseek-data", lseek(status, 0, 3 /* SEEK_DATA */));
    report("read-bad-pointer", read(status, bad_pointer, 64));
    report("read-kernel-pointer", pread(status, kernel_pointer, 64, 0));
    report("readlink-bad-pointer", readlink("/proc/self/exe", bad_pointer, 4096));
    report("readlink-small-buffer", readlink("/proc/self/exe", buffer, sizeof buffer) < 0 ? -1 : 0);
    report("readlink-not-link", readlink("/proc/self/status", buffer, sizeof buffer));
    report("open-bad-path", open(bad_pointer, O_RDONLY));

    /* getdents with buffers too small for one entry, then one entry at a time */
    int directory = open("/proc/self", O_RDONLY | O_DIRECTORY);
    report("getdents-1", syscall(SYS_getdents64, directory, buffer, 1));
    report("getdents-0", syscall(SYS_getdents64, directory, buffer, 0));
    report("getdents-bad-pointer", syscall(SYS_getdents64, directory, bad_pointer, 4096));
    int one_by_one = 0;
    long got;
    lseek(directory, 0, SEEK_SET);
    while ((got = syscall(SYS_getdents64, directory, buffer, 32)) > 0)
        one_by_one++;
    report("getdents-small-end", got);
    lseek(directory, 0, SEEK_SET);
    static char big[1 << 16];
    long whole = syscall(SYS_getdents64, directory, big, sizeof big);
    int counted = 0;
    for (long at = 0; at < whole; at += *(unsigned short *)(big + at + 16))
        counted++;
    printf("getdents-same-count: %d\n", counted > 2 && counted == one_by_one);
    lseek(directory, 1L << 40, SEEK_SET);
    printf("getdents-past-end: %ld\n", syscall(SYS_getdents64, directory, big, sizeof big));
    report("read-directory", read(directory, buffer, sizeof buffer));
    report("getdents-file", syscall(SYS_getdents64, status, big, sizeof big));

    /* a maps file of more than a thousand lines, read a little at a time */
    char *area = mmap(NULL, 2100 * 4096L, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int page = 0; page < 2100; page += 2)
        mprotect(area + page * 4096L, 4096, PROT_READ);
    int maps = open("/proc/self/maps", O_RDONLY);
    long lines = 0, length = 0;
    char piece[7];
    while ((got = read(maps, piece, sizeof piece)) > 0) {
        length += got;
        for (long i = 0; i < got; i++)
            lines += piece[i] == '\n';
    }
    printf("maps-lines-over-2000: %d\n", lines > 2000);
    snprintf(path, sizeof path, "%lx-", (unsigned long)(area + 2098 * 4096L));
    printf("maps-has-last: %d\n", readable_with("/proc/self/maps", path));
    return 0;
}
