/* procfs.c — a program that reads /proc about itself and checks what it
 * reads against what it knows: its own pointers, getpid(), its open fds,
 * getrlimit, sched_getaffinity, uname.
 *
 * Usage: procfs ARG...   (the arguments are echoed back through cmdline)
 *
 * Every line it prints is the same natively and under minikvm (the values
 * that differ between the two — addresses, pids, the CPU — are compared
 * inside the program, and only "ok" or what was wrong is printed), so the
 * test compares the two runs' output exactly.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

extern char **environ;

/* The whole of a /proc file, read in small pieces (as a seq file is read);
 * NUL-terminated; its length in *size. */
static char *slurp(const char *path, size_t *size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return NULL;
    size_t capacity = 256, length = 0;
    char *data = malloc(capacity);
    for (;;) {
        if (length + 100 >= capacity)
            data = realloc(data, capacity *= 2);
        ssize_t got = read(fd, data + length, 100);
        if (got <= 0)
            break;
        length += (size_t)got;
    }
    close(fd);
    data[length] = '\0';
    if (size)
        *size = length;
    return data;
}

static void check(const char *name, int ok)
{
    printf("%s: %s\n", name, ok ? "ok" : "WRONG");
}

/* The maps line holding ADDRESS: its permissions in PERMS, its name in NAME. */
static int find_mapping(const char *maps, uintptr_t address, char perms[5], char *name)
{
    for (const char *line = maps; *line; ) {
        unsigned long start, end;
        char p[5] = "", n[4096] = "";
        sscanf(line, "%lx-%lx %4s %*s %*s %*s %4095[^\n]", &start, &end, p, n);
        if (start <= address && address < end) {
            strcpy(perms, p);
            strcpy(name, n);
            return 1;
        }
        const char *next = strchr(line, '\n');
        if (!next)
            break;
        line = next + 1;
    }
    return 0;
}

static long status_field(const char *status, const char *field)
{
    const char *at = strstr(status, field);
    return at ? strtol(at + strlen(field), NULL, 10) : -1;
}

static volatile int stop_thread;

static void *waiter(void *unused)
{
    (void)unused;
    while (!stop_thread)
        sched_yield();
    return NULL;
}

int main(int argc, char **argv)
{
    char path[4096], link[4096];

    /* exe: the program's own path (the test runs it by its absolute path) */
    ssize_t n = readlink("/proc/self/exe", link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    check("exe", n > 0 && strcmp(link, argv[0]) == 0);

    /* cmdline and environ: exactly argv and the environment */
    size_t size;
    char *cmdline = slurp("/proc/self/cmdline", &size);
    size_t offset = 0;
    int same = cmdline != NULL;
    for (int i = 0; same && i < argc; i++) {
        same = offset < size && strcmp(cmdline + offset, argv[i]) == 0;
        offset += strlen(argv[i]) + 1;
    }
    check("cmdline", same && offset == size);
    char *env = slurp("/proc/self/environ", &size);
    offset = 0;
    same = env != NULL;
    for (char **e = environ; same && *e; e++) {
        same = offset < size && strcmp(env + offset, *e) == 0;
        offset += strlen(*e) + 1;
    }
    check("environ", same && offset == size);

    /* maps: main is in an executable mapping named by the program's path,
     * a local variable in [stack], a fresh mmap in a rw-p line */
    char *maps = slurp("/proc/self/maps", NULL);
    char perms[5] = "", name[4096] = "";
    check("maps-main", maps && find_mapping(maps, (uintptr_t)&main, perms, name)
          && strcmp(perms, "r-xp") == 0 && strcmp(name, argv[0]) == 0);
    int local = 0;
    check("maps-stack", maps && find_mapping(maps, (uintptr_t)&local, perms, name)
          && strcmp(perms, "rw-p") == 0 && strcmp(name, "[stack]") == 0);
    void *fresh = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect((char *)fresh + 4096, 4096, PROT_NONE);
    free(maps);
    maps = slurp("/proc/self/maps", NULL);
    char middle[5] = "";
    check("maps-mmap", maps && find_mapping(maps, (uintptr_t)fresh, perms, name)
          && strcmp(perms, "rw-p") == 0
          && find_mapping(maps, (uintptr_t)fresh + 4096, middle, name)
          && strcmp(middle, "---p") == 0);

    /* status: Pid, PPid, Threads as the calls say; State running */
    char *status = slurp("/proc/self/status", NULL);
    check("status-pid", status && status_field(status, "\nPid:") == getpid());
    check("status-ppid", status && status_field(status, "\nPPid:") == getppid());
    check("status-tgid", status && status_field(status, "\nTgid:") == getpid());
    check("status-threads", status && status_field(status, "\nThreads:") == 1);
    const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    char comm[16];
    snprintf(comm, sizeof comm, "%s", base);     /* the kernel keeps 15 bytes of it */
    snprintf(path, sizeof path, "Name:\t%s\n", comm);
    check("status-name", status && strncmp(status, path, strlen(path)) == 0);
    pthread_t thread;
    pthread_create(&thread, NULL, waiter, NULL);
    free(status);
    status = slurp("/proc/self/status", NULL);
    check("status-threads-2", status && status_field(status, "\nThreads:") == 2);
    int tasks = 0;
    DIR *task = opendir("/proc/self/task");
    for (struct dirent *entry; task && (entry = readdir(task)); )
        tasks += entry->d_name[0] != '.';
    if (task)
        closedir(task);
    check("task-entries", tasks == 2);
    stop_thread = 1;
    pthread_join(thread, NULL);

    /* stat: the pid and the name in parentheses first */
    char *task_stat = slurp("/proc/self/stat", NULL);
    snprintf(path, sizeof path, "%d (%s) R ", getpid(), comm);
    check("stat", task_stat && strncmp(task_stat, path, strlen(path)) == 0);

    /* fd/: exactly the open fds, the listing's own included; a pipe's link */
    int pipe_ends[2];
    pipe(pipe_ends);
    int opened = open("/proc/self/status", O_RDONLY);
    DIR *fds = opendir("/proc/self/fd");
    int seen[1024] = {0}, extra = 0;
    for (struct dirent *entry; fds && (entry = readdir(fds)); ) {
        if (entry->d_name[0] == '.')
            continue;
        int fd = atoi(entry->d_name);
        if (fd < 1024 && fcntl(fd, F_GETFD) >= 0)
            seen[fd] = 1;
        else
            extra++;
    }
    int all = fds != NULL && extra == 0;
    for (int fd = 0; fd < 1024; fd++)
        if (fcntl(fd, F_GETFD) >= 0 && !seen[fd])
            all = 0;
    check("fd-listing", all);
    if (fds)
        closedir(fds);
    snprintf(path, sizeof path, "/proc/self/fd/%d", pipe_ends[0]);
    n = readlink(path, link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    check("fd-pipe", strncmp(link, "pipe:[", 6) == 0 && link[n - 1] == ']');
    snprintf(path, sizeof path, "/proc/self/fd/%d", opened);
    n = readlink(path, link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    snprintf(path, sizeof path, "/proc/%d/status", getpid());
    check("fd-file", strcmp(link, path) == 0);
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", pipe_ends[1]);
    char *info = slurp(path, NULL);
    check("fdinfo", info && strncmp(info, "pos:\t0\nflags:\t", 14) == 0);

    /* limits: the open-files row is getrlimit's */
    struct rlimit nofile;
    getrlimit(RLIMIT_NOFILE, &nofile);
    char *limits = slurp("/proc/self/limits", NULL);
    char *row = limits ? strstr(limits, "Max open files") : NULL;
    check("limits", row && strtoul(row + 25, NULL, 10) == nofile.rlim_cur);

    /* the machine: as many processors in cpuinfo as sched_getaffinity gives */
    cpu_set_t cpus;
    sched_getaffinity(0, sizeof cpus, &cpus);
    char *cpuinfo = slurp("/proc/cpuinfo", NULL);
    int processors = 0;
    for (char *at = cpuinfo; at && (at = strstr(at, "processor\t:")); at++)
        processors++;
    check("cpuinfo-affinity", processors > 0 && processors == CPU_COUNT(&cpus));
    check("cpuinfo-flags", cpuinfo && strstr(cpuinfo, "\nflags\t\t: ") != NULL
          && strstr(cpuinfo, " sse2") != NULL);
    check("nprocs", get_nprocs() == CPU_COUNT(&cpus));

    /* meminfo's MemTotal is sysinfo's RAM; uptime agrees with sysinfo */
    struct sysinfo system;
    sysinfo(&system);
    char *meminfo = slurp("/proc/meminfo", NULL);
    check("meminfo", meminfo && strncmp(meminfo, "MemTotal:", 9) == 0 &&
          strtoull(meminfo + 9, NULL, 10) == system.totalram * system.mem_unit / 1024);
    char *uptime = slurp("/proc/uptime", NULL);
    double up = uptime ? strtod(uptime, NULL) : -1;
    check("uptime", up >= 0 && up + 2 >= system.uptime && up <= system.uptime + 2);

    /* the kernel's names are uname's */
    struct utsname names;
    uname(&names);
    char *release = slurp("/proc/sys/kernel/osrelease", NULL);
    char *ostype = slurp("/proc/sys/kernel/ostype", NULL);
    char *hostname = slurp("/proc/sys/kernel/hostname", NULL);
    check("osrelease", release && strncmp(release, names.release, strlen(names.release)) == 0);
    check("ostype", ostype && strcmp(ostype, "Linux\n") == 0);
    check("hostname", hostname && strncmp(hostname, names.nodename, strlen(names.nodename)) == 0);
    char *pid_max = slurp("/proc/sys/kernel/pid_max", NULL);
    check("pid_max", pid_max && atol(pid_max) > getpid());

    /* seq files: lseek SEEK_END is EINVAL, reading past the end gives 0 */
    int fd = open("/proc/self/status", O_RDONLY);
    errno = 0;
    off_t end = lseek(fd, 0, SEEK_END);
    printf("lseek-end: %ld %d\n", (long)end, errno);
    char byte;
    lseek(fd, 1 << 30, SEEK_SET);
    printf("read-far: %zd\n", read(fd, &byte, 1));
    printf("pread-far: %zd\n", pread(fd, &byte, 1, 1L << 40));
    ssize_t first = pread(fd, &byte, 1, 0);
    printf("pread-0: %zd %c\n", first, byte);

    /* /proc/self is a link to /proc/<pid>; /proc/self/ a directory */
    struct stat st;
    snprintf(path, sizeof path, "%d", getpid());
    n = readlink("/proc/self", link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    check("self-link", strcmp(link, path) == 0);
    check("self-dir", stat("/proc/self/", &st) == 0 && S_ISDIR(st.st_mode));
    check("status-regular", stat("/proc/self/status", &st) == 0 && S_ISREG(st.st_mode));
    n = readlink("/proc/self/root", link, sizeof link - 1);
    link[n > 0 ? n : 0] = '\0';
    check("root-link", strcmp(link, "/") == 0);
    return 0;
}
