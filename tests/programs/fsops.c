/* fsops.c — the file system calls beyond open/read/write, and the errno of each misuse.
 *
 * Works in a fresh working directory: makes a directory "d" and files in
 * it, then lists, stats, renames, links, truncates, changes times and modes,
 * copies between files, closes ranges, polls pipes and uses a futex, printing
 * one line per step: a result, or the errno's name.  Nothing printed depends
 * on inode numbers, times, absolute paths or the file system's listing order,
 * so the output is the same natively and under minikvm, with either libc.
 *
 * Given an argument, it instead blocks in a way only a time limit can end
 * (under minikvm): "futex-deadlock" waits on a futex with no timeout,
 * "futex-long" for 100 s, "poll-forever" polls an empty pipe with no
 * timeout.  Never run those natively.
 *
 * Raw syscall() is used wherever a libc might not wrap the call (musl 1.2.3
 * has no statx, close_range or fchmodat2), with the kernel's structures
 * declared here (musl-gcc sees no <linux/*.h>).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_statx
#define SYS_statx 332
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#define K_AT_FDCWD (-100)
#define K_AT_SYMLINK_NOFOLLOW 0x100
#define K_AT_REMOVEDIR 0x200
#define K_AT_SYMLINK_FOLLOW 0x400
#define K_AT_EMPTY_PATH 0x1000
#define K_RENAME_NOREPLACE 1
#define K_RENAME_EXCHANGE 2
#define K_STATX_BASIC_STATS 0x7ffU
#define K_CLOSE_RANGE_CLOEXEC 4
#define K_FUTEX_WAIT 0
#define K_FUTEX_WAKE 1
#define K_FUTEX_CMP_REQUEUE 4
#define K_FUTEX_WAKE_OP 5
#define K_FUTEX_PRIVATE 128
#define K_UTIME_NOW ((1L << 30) - 1)
#define K_UTIME_OMIT ((1L << 30) - 2)

struct k_dirent64 {              /* struct linux_dirent64 */
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

struct k_statx_timestamp { int64_t tv_sec; uint32_t tv_nsec; int32_t reserved; };
struct k_statx {                 /* struct statx, 256 bytes */
    uint32_t stx_mask, stx_blksize;
    uint64_t stx_attributes;
    uint32_t stx_nlink, stx_uid, stx_gid;
    uint16_t stx_mode, spare0;
    uint64_t stx_ino, stx_size, stx_blocks, stx_attributes_mask;
    struct k_statx_timestamp stx_atime, stx_btime, stx_ctime, stx_mtime;
    uint32_t stx_rdev_major, stx_rdev_minor, stx_dev_major, stx_dev_minor;
    uint64_t spare[14];
};

static const char *name_of(int e)
{
    switch (e) {
    case 0: return "0";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case ESPIPE: return "ESPIPE";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOSYS: return "ENOSYS";
    default: return "other";
    }
}

/* "what: 0" on success, "what: ENAME" on failure (for calls returning -1/errno). */
static long show(const char *what, long result)
{
    if (result < 0)
        printf("%s: %s\n", what, name_of(errno));
    else
        printf("%s: %ld\n", what, result);
    errno = 0;
    return result;
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        printf("cannot write %s: %s\n", path, name_of(errno));
        exit(1);
    }
    close(fd);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *type_name(unsigned char type)
{
    return type == DT_DIR ? "dir" : type == DT_REG ? "file" : type == DT_LNK ? "link" : "?";
}

static void directories(void)
{
    show("mkdir d", mkdir("d", 0755));
    show("mkdir d again", mkdir("d", 0755));
    show("mkdir d/.", mkdir("d/.", 0755));
    show("mkdir missing/x", mkdir("missing/x", 0755));
    int dirfd = open("d", O_RDONLY | O_DIRECTORY);
    show("mkdirat(d, sub)", mkdirat(dirfd, "sub", 0700));
    struct stat st;
    stat("d/sub", &st);
    printf("d/sub is a directory: %d, owner bits %o\n", S_ISDIR(st.st_mode), (st.st_mode >> 6) & 7);
    for (int i = 1; i <= 5; i++) {
        char path[32];
        snprintf(path, sizeof path, "d/f%d", i);
        write_file(path, "0123456789");
    }
    show("symlink f1 d/s1", symlink("f1", "d/s1"));

    /* getdents64 with a small buffer: several calls, offsets that grow */
    char buffer[80], *names[16];
    int count = 0, calls = 0, offsets_grow = 1;
    int64_t last_offset = 0;
    long n;
    while ((n = syscall(SYS_getdents64, dirfd, buffer, sizeof buffer)) > 0) {
        calls++;
        for (long at = 0; at < n;) {
            struct k_dirent64 *entry = (struct k_dirent64 *)(buffer + at);
            char line[300];
            snprintf(line, sizeof line, "%s %s", entry->d_name, type_name(entry->d_type));
            if (count < 16)
                names[count++] = strdup(line);
            offsets_grow &= entry->d_off > last_offset;
            last_offset = entry->d_off;
            at += entry->d_reclen;
        }
    }
    show("getdents64 at the end", n);
    qsort(names, count, sizeof *names, compare_strings);
    printf("getdents64: %d entries in more than one call: %d, offsets grow: %d\n", count,
           calls > 1, offsets_grow);
    for (int i = 0; i < count; i++) {
        printf("  %s\n", names[i]);
        free(names[i]);
    }
    show("lseek(d, 0)", lseek(dirfd, 0, SEEK_SET));
    n = syscall(SYS_getdents64, dirfd, buffer, 10);
    show("getdents64 into 10 bytes", n);
    int file = open("d/f1", O_RDONLY);
    show("getdents64 of a file", syscall(SYS_getdents64, file, buffer, sizeof buffer));
    close(file);
    close(dirfd);

    /* telldir/seekdir: the offsets stay valid */
    DIR *dir = opendir("d");
    readdir(dir);
    long mark = telldir(dir);
    char first[256];
    snprintf(first, sizeof first, "%s", readdir(dir)->d_name);
    while (readdir(dir))
        ;
    seekdir(dir, mark);
    printf("seekdir back gives the same entry: %d\n", strcmp(first, readdir(dir)->d_name) == 0);
    closedir(dir);

    /* ".." listed in the working directory (the top of the grant under
     * minikvm) is the directory stat("..") describes */
    struct stat up;
    show("stat ..", stat("..", &up));
    dir = opendir(".");
    struct dirent *entry;
    while ((entry = readdir(dir)))
        if (strcmp(entry->d_name, "..") == 0)
            printf("  listed .. is stat(\"..\"): %d\n", entry->d_ino == up.st_ino);
    closedir(dir);
}

static void statx_and_stat(void)
{
    struct k_statx stx;
    struct stat st;
    memset(&stx, 0xff, sizeof stx);
    show("statx d/f1", syscall(SYS_statx, K_AT_FDCWD, "d/f1", 0, K_STATX_BASIC_STATS, &stx));
    stat("d/f1", &st);
    printf("statx: basic mask %d, size %llu, same ino %d, same mode %d, nlink %u, mtime same %d\n",
           (stx.stx_mask & K_STATX_BASIC_STATS) == K_STATX_BASIC_STATS,
           (unsigned long long)stx.stx_size, stx.stx_ino == st.st_ino,
           stx.stx_mode == st.st_mode, stx.stx_nlink,
           stx.stx_mtime.tv_sec == st.st_mtim.tv_sec && stx.stx_mtime.tv_nsec == st.st_mtim.tv_nsec);
    show("statx d/s1 nofollow", syscall(SYS_statx, K_AT_FDCWD, "d/s1", K_AT_SYMLINK_NOFOLLOW,
                                        K_STATX_BASIC_STATS, &stx));
    printf("statx: a symlink %d\n", S_ISLNK(stx.stx_mode));
    int fd = open("d/f2", O_RDONLY);
    show("statx fd AT_EMPTY_PATH", syscall(SYS_statx, fd, "", K_AT_EMPTY_PATH,
                                           K_STATX_BASIC_STATS, &stx));
    printf("statx: size %llu\n", (unsigned long long)stx.stx_size);
    close(fd);
    show("statx bad flags", syscall(SYS_statx, K_AT_FDCWD, "d/f1", 0x80000000, 0, &stx));
    show("statx missing", syscall(SYS_statx, K_AT_FDCWD, "d/nope", 0, 0, &stx));
    show("statx bad pointer", syscall(SYS_statx, K_AT_FDCWD, "d/f1", 0, 0, (void *)8));
}

static void removing(void)
{
    show("unlink d", unlink("d"));
    show("rmdir d/f1", rmdir("d/f1"));
    show("rmdir d", rmdir("d"));
    show("rmdir d/.", rmdir("d/."));
    show("rmdir d/sub/..", rmdir("d/sub/.."));
    show("unlink d/f5/", unlink("d/f5/"));
    show("unlinkat bad flags", unlinkat(AT_FDCWD, "d/f5", 0x1));
    show("unlinkat d/sub AT_REMOVEDIR", unlinkat(AT_FDCWD, "d/sub", AT_REMOVEDIR));
    show("unlink d/f5", unlink("d/f5"));
    show("unlink d/f5 again", unlink("d/f5"));
}

static void renaming(void)
{
    show("rename d/f4 d/g4", rename("d/f4", "d/g4"));
    printf("  d/f4 %ld, d/g4 %ld\n", file_size("d/f4"), file_size("d/g4"));
    write_file("d/x", "x");
    show("renameat2 NOREPLACE onto d/x", syscall(SYS_renameat2, K_AT_FDCWD, "d/g4", K_AT_FDCWD,
                                                 "d/x", K_RENAME_NOREPLACE));
    show("renameat2 EXCHANGE d/g4 d/x", syscall(SYS_renameat2, K_AT_FDCWD, "d/g4", K_AT_FDCWD,
                                                "d/x", K_RENAME_EXCHANGE));
    printf("  d/g4 %ld, d/x %ld\n", file_size("d/g4"), file_size("d/x"));
    show("renameat2 bad flags", syscall(SYS_renameat2, K_AT_FDCWD, "d/g4", K_AT_FDCWD, "d/y", 8));
    show("rename d/. d/y", rename("d/.", "d/y"));
    show("rename missing", rename("d/missing", "d/y"));
    show("rename d/x/ d/y", rename("d/x/", "d/y"));
    show("renameat (dirfds)", renameat(AT_FDCWD, "d/x", AT_FDCWD, "d/y"));
    unlink("d/y");
    unlink("d/g4");
}

static void linking(void)
{
    struct stat st;
    show("link d/f2 d/h2", link("d/f2", "d/h2"));
    stat("d/f2", &st);
    printf("  nlink %lu\n", (unsigned long)st.st_nlink);
    show("link onto existing", link("d/f2", "d/h2"));
    show("link d/. d/z", link("d/.", "d/z"));
    show("symlink f2 d/s2", symlink("f2", "d/s2"));
    char target[64] = {0};
    show("readlink d/s2", readlink("d/s2", target, sizeof target - 1));
    printf("  target %s\n", target);
    show("readlink d/f2", readlink("d/f2", target, sizeof target - 1));
    show("linkat d/s2 d/t2 (the link)", linkat(AT_FDCWD, "d/s2", AT_FDCWD, "d/t2", 0));
    lstat("d/t2", &st);
    printf("  d/t2 is a symlink %d\n", S_ISLNK(st.st_mode));
    show("linkat d/s2 d/u2 FOLLOW", linkat(AT_FDCWD, "d/s2", AT_FDCWD, "d/u2", AT_SYMLINK_FOLLOW));
    lstat("d/u2", &st);
    printf("  d/u2 is a regular file %d, nlink %lu\n", S_ISREG(st.st_mode), (unsigned long)st.st_nlink);
    show("linkat bad flags", linkat(AT_FDCWD, "d/f2", AT_FDCWD, "d/v2", 0x1));
    show("symlink onto existing", symlink("x", "d/f2"));
}

static void sizes_and_sync(void)
{
    int fd = open("d/f3", O_RDWR);
    show("ftruncate 100", ftruncate(fd, 100));
    printf("  size %ld\n", file_size("d/f3"));
    show("ftruncate -1", ftruncate(fd, -1));
    show("fsync", fsync(fd));
    show("fdatasync", fdatasync(fd));
    close(fd);
    show("truncate 3", truncate("d/f3", 3));
    printf("  size %ld\n", file_size("d/f3"));
    show("truncate d", truncate("d", 0));
    show("truncate missing", truncate("d/missing", 0));
    fd = open("d/f3", O_RDONLY);
    show("ftruncate read-only fd", ftruncate(fd, 0));
    close(fd);
    int pipe_fds[2];
    pipe(pipe_fds);
    show("ftruncate pipe", ftruncate(pipe_fds[1], 0));
    show("fsync pipe", fsync(pipe_fds[1]));
    close(pipe_fds[0]);
    close(pipe_fds[1]);
}

static void times_and_modes(void)
{
    struct stat st;
    struct timespec times[2] = {{1000, 500}, {2000, 700}};
    show("utimensat d/f2", utimensat(AT_FDCWD, "d/f2", times, 0));
    stat("d/f2", &st);
    printf("  atime %ld.%ld mtime %ld.%ld\n", (long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
           (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    struct timespec omit[2] = {{0, K_UTIME_OMIT}, {3000, 0}};
    show("utimensat UTIME_OMIT", utimensat(AT_FDCWD, "d/f2", omit, 0));
    stat("d/f2", &st);
    printf("  atime %ld mtime %ld\n", (long)st.st_atim.tv_sec, (long)st.st_mtim.tv_sec);
    struct timespec now[2] = {{0, K_UTIME_NOW}, {0, K_UTIME_OMIT}};
    show("utimensat UTIME_NOW", utimensat(AT_FDCWD, "d/f2", now, 0));
    stat("d/f2", &st);
    printf("  atime is recent %d, mtime %ld\n", st.st_atim.tv_sec > 1577836800, (long)st.st_mtim.tv_sec);
    show("utimensat NULL times", utimensat(AT_FDCWD, "d/f2", NULL, 0));
    stat("d/f2", &st);
    printf("  mtime is recent %d\n", st.st_mtim.tv_sec > 1577836800);
    struct timespec bad[2] = {{0, 1000000000}, {0, 0}};
    show("utimensat bad nsec", utimensat(AT_FDCWD, "d/f2", bad, 0));
    show("utimensat bad flags", utimensat(AT_FDCWD, "d/f2", times, 0x4));
    int fd = open("d/f1", O_RDONLY);
    show("futimens", futimens(fd, times));
    fstat(fd, &st);
    printf("  mtime %ld\n", (long)st.st_mtim.tv_sec);
    show("utimensat fd AT_EMPTY_PATH", syscall(SYS_utimensat, fd, "", omit, K_AT_EMPTY_PATH));
    fstat(fd, &st);
    printf("  mtime %ld\n", (long)st.st_mtim.tv_sec);
    show("utimensat NULL path AT_FDCWD", syscall(SYS_utimensat, K_AT_FDCWD, NULL, times, 0));
    show("utimensat s1 NOFOLLOW", utimensat(AT_FDCWD, "d/s1", times, AT_SYMLINK_NOFOLLOW));
    lstat("d/s1", &st);
    printf("  link mtime %ld\n", (long)st.st_mtim.tv_sec);

    show("chmod 0600", chmod("d/f1", 0600));
    stat("d/f1", &st);
    printf("  mode %o\n", st.st_mode & 07777);
    show("fchmod 0640", fchmod(fd, 0640));
    fstat(fd, &st);
    printf("  mode %o\n", st.st_mode & 07777);
    close(fd);
    show("fchmodat 0604", fchmodat(AT_FDCWD, "d/f1", 0604, 0));
    stat("d/f1", &st);
    printf("  mode %o\n", st.st_mode & 07777);
    show("chmod via symlink 0644", chmod("d/s1", 0644));
    stat("d/f1", &st);
    printf("  mode %o\n", st.st_mode & 07777);
    show("chmod missing", chmod("d/missing", 0600));
    show("fchmodat2 symlink NOFOLLOW", syscall(SYS_fchmodat2, K_AT_FDCWD, "d/s1", 0600,
                                               K_AT_SYMLINK_NOFOLLOW));
    show("chown to the owner", chown("d/f1", getuid(), getgid()));
    show("chown -1 -1", chown("d/f1", -1, -1));
    show("lchown symlink", lchown("d/s1", -1, -1));
    show("chown missing", chown("d/missing", -1, -1));
}

static void file_systems_and_copies(void)
{
    struct stat st;
    int null = open("/dev/null", O_RDWR);
    show("fstat /dev/null", fstat(null, &st));
    printf("  character device %d, %u:%u, mode %o\n", S_ISCHR(st.st_mode), major(st.st_rdev),
           minor(st.st_rdev), st.st_mode & 0777);
    close(null);
    show("stat /dev/zero", stat("/dev/zero", &st));
    printf("  character device %d, %u:%u\n", S_ISCHR(st.st_mode), major(st.st_rdev),
           minor(st.st_rdev));
    int ends[2];
    pipe(ends);
    show("fstat pipe", fstat(ends[0], &st));
    printf("  fifo %d\n", S_ISFIFO(st.st_mode));
    close(ends[0]);
    close(ends[1]);

    struct statfs by_path, by_fd;
    show("statfs .", statfs(".", &by_path));
    int fd = open("d/f2", O_RDONLY);
    show("fstatfs", fstatfs(fd, &by_fd));
    printf("  same type %d, namelen %ld\n", by_path.f_type == by_fd.f_type, (long)by_fd.f_namelen);
    show("statfs missing", statfs("d/missing", &by_path));

    write_file("d/src", "abcdefghijklmnopqrstuvwxyz");
    int source = open("d/src", O_RDONLY);
    int target = open("d/dst", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    off_t offset = 3;
    show("sendfile 5 from offset 3", sendfile(target, source, &offset, 5));
    printf("  offset now %ld, file position %ld\n", (long)offset, (long)lseek(source, 0, SEEK_CUR));
    show("sendfile 4 from the position", sendfile(target, source, NULL, 4));
    printf("  file position %ld, dst size %ld\n", (long)lseek(source, 0, SEEK_CUR), file_size("d/dst"));
    int pipe_fds[2];
    pipe(pipe_fds);
    show("sendfile to a pipe", sendfile(pipe_fds[1], source, NULL, 6));
    char buffer[32] = {0};
    show("read the pipe", read(pipe_fds[0], buffer, sizeof buffer - 1));
    printf("  %s\n", buffer);
    offset = 20;
    fflush(stdout);
    show("sendfile to stdout", sendfile(1, source, &offset, 6));
    printf("\n");
    int appending = open("d/dst", O_WRONLY | O_APPEND);
    show("sendfile to O_APPEND", sendfile(appending, source, NULL, 1));
    show("sendfile from a write-only fd", sendfile(target, appending, NULL, 1));
    close(appending);

    int64_t in_offset = 0, out_offset = 9;
    show("copy_file_range", syscall(SYS_copy_file_range, source, &in_offset, target, &out_offset, 3, 0));
    printf("  offsets %lld %lld\n", (long long)in_offset, (long long)out_offset);
    show("copy_file_range flags", syscall(SYS_copy_file_range, source, NULL, target, NULL, 3, 1));
    show("copy_file_range pipe", syscall(SYS_copy_file_range, pipe_fds[0], NULL, target, NULL, 3, 0));
    close(target);
    target = open("d/dst", O_RDONLY);
    memset(buffer, 0, sizeof buffer);
    read(target, buffer, sizeof buffer - 1);
    printf("  dst: %s\n", buffer);

    show("posix_fadvise", posix_fadvise(source, 0, 0, POSIX_FADV_SEQUENTIAL));
    printf("posix_fadvise bad advice: %s\n", name_of(posix_fadvise(source, 0, 0, 99)));
    printf("posix_fadvise pipe: %s\n", name_of(posix_fadvise(pipe_fds[0], 0, 0, 0)));
    show("flock LOCK_EX", flock(source, LOCK_EX));
    show("flock LOCK_UN", flock(source, LOCK_UN));
    show("flock bad", flock(source, 77));
    show("flock bad fd", flock(99, LOCK_EX));
    struct flock lock = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    show("fcntl F_SETLK read lock", fcntl(source, F_SETLK, &lock));
    lock.l_type = F_WRLCK;
    show("fcntl F_SETLK write lock, read-only fd", fcntl(source, F_SETLK, &lock));
    show("fcntl F_GETLK", fcntl(source, F_GETLK, &lock));
    printf("  no conflicting lock %d\n", lock.l_type == F_UNLCK);
    show("fcntl F_GETLK F_UNLCK", fcntl(source, F_GETLK, &lock));
    lock.l_type = F_UNLCK;
    show("fcntl F_SETLKW unlock", fcntl(source, F_SETLKW, &lock));
    lock.l_type = 9;
    show("fcntl F_SETLK bad type", fcntl(source, F_SETLK, &lock));
    lock.l_type = F_RDLCK;
    lock.l_pid = 0;
    show("fcntl F_OFD_SETLK", fcntl(source, 37 /* F_OFD_SETLK */, &lock));
    lock.l_pid = 1;
    show("fcntl F_OFD_SETLK with l_pid", fcntl(source, 37 /* F_OFD_SETLK */, &lock));
    show("fcntl F_GETPIPE_SZ", fcntl(pipe_fds[0], 1032 /* F_GETPIPE_SZ */));
    show("fcntl F_GETPIPE_SZ of a file", fcntl(source, 1032 /* F_GETPIPE_SZ */));

    char link[256] = {0};
    char fd_path[64];
    snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", source);
    long length = readlink(fd_path, link, sizeof link - 1);
    printf("readlink %s ends with /d/src: %d\n", "/proc/self/fd/N",
           length > 6 && strcmp(link + length - 6, "/d/src") == 0);
    memset(link, 0, sizeof link);
    snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", pipe_fds[0]);
    readlink(fd_path, link, sizeof link - 1);
    printf("readlink of a pipe starts with pipe:[ %d\n", strncmp(link, "pipe:[", 6) == 0);
    show("readlink /proc/self/fd/99", readlink("/proc/self/fd/99", link, sizeof link));
    char cwd[256] = {0};
    memset(link, 0, sizeof link);
    getcwd(cwd, sizeof cwd);
    readlink("/proc/self/cwd", link, sizeof link - 1);
    printf("readlink /proc/self/cwd is getcwd: %d\n", strcmp(cwd, link) == 0);

    int a = dup(source), b = dup(source), c = dup(source);
    show("close_range CLOEXEC", syscall(SYS_close_range, b, c, K_CLOSE_RANGE_CLOEXEC));
    printf("  cloexec %d %d %d\n", fcntl(a, F_GETFD), fcntl(b, F_GETFD), fcntl(c, F_GETFD));
    show("close_range", syscall(SYS_close_range, a, ~0U, 0));
    show("fcntl of a closed fd", fcntl(b, F_GETFD));
    show("close_range first > last", syscall(SYS_close_range, 10, 5, 0));
    close(fd);
    close(source);
    close(target);
    close(pipe_fds[0]);
    close(pipe_fds[1]);
}

static void waiting(void)
{
    int pipe_fds[2];
    pipe(pipe_fds);
    struct pollfd fds[3] = {{pipe_fds[0], POLLIN, 0}, {pipe_fds[1], POLLOUT, 0}, {99, POLLIN, 0}};
    show("poll", poll(fds, 3, 0));
    printf("  revents %#x %#x %#x\n", fds[0].revents, fds[1].revents, fds[2].revents);
    show("poll empty pipe 20 ms", poll(fds, 1, 20));
    write(pipe_fds[1], "x", 1);
    show("poll after a write", poll(fds, 1, -1));
    printf("  revents %#x\n", fds[0].revents);
    struct timespec timeout = {0, 1000000};
    show("ppoll", ppoll(fds, 2, &timeout, NULL));

    fd_set readable, writable;
    FD_ZERO(&readable);
    FD_ZERO(&writable);
    FD_SET(pipe_fds[0], &readable);
    FD_SET(pipe_fds[1], &writable);
    struct timeval tv = {0, 0};
    show("select", select(pipe_fds[1] + 1, &readable, &writable, NULL, &tv));
    printf("  read set %d, write set %d\n", FD_ISSET(pipe_fds[0], &readable),
           FD_ISSET(pipe_fds[1], &writable));
    char byte;
    read(pipe_fds[0], &byte, 1);
    FD_ZERO(&readable);
    FD_SET(pipe_fds[0], &readable);
    tv.tv_usec = 10000;
    show("select empty pipe 10 ms", select(pipe_fds[0] + 1, &readable, NULL, NULL, &tv));
    printf("  read set %d\n", FD_ISSET(pipe_fds[0], &readable));
    FD_SET(60, &readable);
    show("select a closed fd", select(61, &readable, NULL, NULL, &tv));
    struct timespec zero = {0, 0};
    FD_ZERO(&writable);
    FD_SET(pipe_fds[1], &writable);
    show("pselect", pselect(pipe_fds[1] + 1, NULL, &writable, NULL, &zero, NULL));
    close(pipe_fds[1]);
    show("poll after the writer closed", poll(fds, 1, 0));
    printf("  revents %#x\n", fds[0].revents);
    close(pipe_fds[0]);
    int file = open("d/f1", O_RDONLY);
    struct pollfd regular = {file, POLLIN | POLLOUT, 0};
    show("poll a regular file", poll(&regular, 1, 0));
    printf("  revents %#x\n", regular.revents);
    close(file);
    int copy = dup(1);                  /* one file, two fds, different events */
    struct pollfd same[2] = {{1, POLLOUT, 0}, {copy, POLLIN, 0}};
    show("poll stdout twice", poll(same, 2, 0));
    printf("  revents %#x %#x\n", same[0].revents, same[1].revents);
    close(copy);
    int null = open("/dev/null", O_WRONLY);
    struct pollfd device = {null, POLLOUT, 0};
    show("poll /dev/null", poll(&device, 1, 0));
    printf("  revents %#x\n", device.revents);
    close(null);

    static uint32_t word = 7, other = 5;
    struct timespec short_wait = {0, 1000000};
    show("futex wait, value differs", syscall(SYS_futex, &word, K_FUTEX_WAIT | K_FUTEX_PRIVATE, 8, NULL, NULL, 0));
    show("futex wait 1 ms", syscall(SYS_futex, &word, K_FUTEX_WAIT | K_FUTEX_PRIVATE, 7, &short_wait, NULL, 0));
    show("futex wake", syscall(SYS_futex, &word, K_FUTEX_WAKE | K_FUTEX_PRIVATE, 1, NULL, NULL, 0));
    show("futex unaligned", syscall(SYS_futex, (char *)&word + 1, K_FUTEX_WAKE, 1, NULL, NULL, 0));
    /* FUTEX_OP_ADD 3 on *other, compare EQ 0 */
    show("futex wake_op", syscall(SYS_futex, &word, K_FUTEX_WAKE_OP | K_FUTEX_PRIVATE, 1, NULL, &other,
                                  (1 << 28) | (0 << 24) | (3 << 12) | 0));
    printf("  other %u\n", other);
    show("futex cmp_requeue mismatch", syscall(SYS_futex, &word, K_FUTEX_CMP_REQUEUE | K_FUTEX_PRIVATE,
                                               1, (void *)1, &other, 6));
    show("futex bad pointer", syscall(SYS_futex, (void *)8, K_FUTEX_WAIT, 0, NULL, NULL, 0));
}

static int block(const char *how)
{
    static uint32_t word = 1;
    struct timespec long_wait = {100, 0};
    int pipe_fds[2];

    printf("blocking: %s\n", how);
    if (strcmp(how, "futex-deadlock") == 0)
        show("futex", syscall(SYS_futex, &word, K_FUTEX_WAIT | K_FUTEX_PRIVATE, 1, NULL, NULL, 0));
    else if (strcmp(how, "futex-long") == 0)
        show("futex", syscall(SYS_futex, &word, K_FUTEX_WAIT | K_FUTEX_PRIVATE, 1, &long_wait, NULL, 0));
    else if (strcmp(how, "poll-forever") == 0 && pipe(pipe_fds) == 0) {
        struct pollfd fds = {pipe_fds[0], POLLIN, 0};
        show("poll", poll(&fds, 1, -1));
    } else {
        printf("unknown way to block: %s\n", how);
        return 2;
    }
    return 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1)
        return block(argv[1]);
    umask(022);
    directories();
    statx_and_stat();
    removing();
    renaming();
    linking();
    sizes_and_sync();
    times_and_modes();
    file_systems_and_copies();
    waiting();
    return 0;
}
