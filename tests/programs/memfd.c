/* memfd_create under minikvm and natively: the same lines must come out.
 *
 * Parts: create (flags, the name limit, bad flags and pointers, what
 * /proc/self/fd/N names), data (write, pread, lseek, ftruncate, fstat
 * sizes; a private mapping sees the data), seals (F_GET_SEALS, F_ADD_SEALS
 * of SHRINK, GROW, WRITE and then their effects, F_SEAL_SEAL; no sealing
 * without MFD_ALLOW_SEALING; seals on a file that is not a memfd).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "errnames.h"

static long raw_memfd(const void *name, unsigned flags) {
    return syscall(SYS_memfd_create, name, flags);
}

static void part_create(void) {
    puts("create:");
    int fd = memfd_create("buffer", MFD_CLOEXEC);
    printf("  created: %s cloexec=%d accmode_rdwr=%d\n", err(fd),
           (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0, (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR);
    char link[64], target[128] = "";
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    long n = readlink(link, target, sizeof target - 1);
    if (n > 0) target[n] = 0;
    printf("  link: %s\n", target);
    struct stat st;
    fstat(fd, &st);
    printf("  regular=%d size=%ld\n", S_ISREG(st.st_mode), (long)st.st_size);
    close(fd);
    char name[300];
    memset(name, 'n', sizeof name);
    name[249] = 0;
    fd = raw_memfd(name, 0);
    printf("  249-byte name: %s\n", err(fd));
    close(fd);
    name[249] = 'n';
    name[250] = 0;
    printf("  250-byte name: %s\n", err(raw_memfd(name, 0)));
    printf("  bad name pointer: %s\n", err(raw_memfd((void *)8, 0)));
    printf("  bad flags: %s\n", err(raw_memfd("x", 0x100)));
}

static void part_data(void) {
    puts("data:");
    int fd = memfd_create("data", 0);
    printf("  write: %ld\n", (long)write(fd, "hello memfd", 11));
    char buffer[32] = "";
    printf("  pread: %ld %.11s\n", (long)pread(fd, buffer, sizeof buffer, 0), buffer);
    printf("  ftruncate 8192: %s\n", err(ftruncate(fd, 8192)));
    struct stat st;
    fstat(fd, &st);
    printf("  size=%ld\n", (long)st.st_size);
    printf("  lseek end: %ld\n", (long)lseek(fd, 0, SEEK_END));
    char *map = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, fd, 0);
    printf("  private map: %s %.5s last=%d\n", map == MAP_FAILED ? "failed" : "ok",
           map == MAP_FAILED ? "" : map, map == MAP_FAILED ? -1 : map[8191]);
    close(fd);
}

static void part_seals(void) {
    puts("seals:");
    int plain = memfd_create("plain", 0);
    printf("  plain get: %d\n", fcntl(plain, F_GET_SEALS));
    printf("  plain add: %s\n", err(fcntl(plain, F_ADD_SEALS, F_SEAL_WRITE)));
    close(plain);
    int fd = memfd_create("sealed", MFD_ALLOW_SEALING);
    write(fd, "0123456789", 10);
    printf("  initial: %#x\n", fcntl(fd, F_GET_SEALS));
    printf("  add shrink|grow: %s\n", err(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW)));
    printf("  shrink: %s\n", err(ftruncate(fd, 5)));
    printf("  grow: %s\n", err(ftruncate(fd, 20)));
    printf("  write in place: %s\n", err(pwrite(fd, "ab", 2, 0)));
    printf("  write past end: %s\n", err(pwrite(fd, "ab", 2, 10)));
    printf("  add write: %s\n", err(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)));
    printf("  write: %s\n", err(pwrite(fd, "cd", 2, 0)));
    printf("  add seal: %s\n", err(fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL)));
    printf("  add after seal: %s\n", err(fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE)));
    printf("  seals: %#x\n", fcntl(fd, F_GET_SEALS));
    printf("  unknown seal: %s\n", err(fcntl(fd, F_ADD_SEALS, 0x10000)));
    char buffer[16] = "";
    pread(fd, buffer, 10, 0);
    printf("  data: %.10s\n", buffer);
    close(fd);
    printf("  not a memfd: %s\n", err(fcntl(1, F_GET_SEALS)));
}

/* Only in the sandbox: memfds are host memory, so together they may hold
 * at most the guest's memory size (argv[2] MiB); natively tmpfs lets a
 * sparse file grow.  Prints what the budget allows. */
static int part_budget(long mib) {
    long limit = mib << 20;
    int fd = memfd_create("big", 0);
    printf("ftruncate twice the memory: %s\n", err(ftruncate(fd, 2 * limit)));
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    long total = 0;
    while (total <= 2 * limit) {
        long n = write(fd, chunk, sizeof chunk);
        if (n < 0) break;
        total += n;
    }
    printf("writes stopped: %s, within the memory size: %d\n", strerror(errno), total <= limit);
    int second = memfd_create("second", 0);
    printf("a second memfd cannot grow: %s\n", err(ftruncate(second, 1 << 20)));
    close(fd);
    printf("after closing the first: %s\n", err(ftruncate(second, 1 << 20)));
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 3 && strcmp(argv[1], "budget") == 0)
        return part_budget(atol(argv[2]));
    part_create();
    part_data();
    part_seals();
    return 0;
}
