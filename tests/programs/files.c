/* files.c — the file system calls a program makes in its working directory.
 *
 * Creates a directory and a file in it, writes, seeks, reads back, checks
 * fstat and stat, lists the directory (sorted: readdir order depends on the
 * file system), renames, unlinks and removes the directory again.  Every
 * step prints its result; nothing printed depends on inode numbers, times,
 * the umask's group/other bits or the absolute path of the directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIRECTORY "minikvm-files-test"
#define FILE_A DIRECTORY "/a.txt"
#define FILE_B DIRECTORY "/b.txt"
#define FILE_C DIRECTORY "/c.txt"

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("%s failed: errno %d (%s)\n", what, errno, strerror(errno));
        exit(1);
    }
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void list_directory(void)
{
    char *names[16];
    size_t count = 0;
    DIR *dir = opendir(DIRECTORY);
    struct dirent *entry;

    check(dir != NULL, "opendir");
    while ((entry = readdir(dir)) != NULL && count < 16)
        names[count++] = strdup(entry->d_name);
    closedir(dir);
    qsort(names, count, sizeof *names, compare_strings);
    printf("readdir:");
    for (size_t i = 0; i < count; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

int main(void)
{
    static const char text[] = "The quick brown fox jumps over the lazy dog\n";
    char buffer[128];
    struct stat st;
    ssize_t n;

    check(mkdir(DIRECTORY, 0755) == 0, "mkdir");
    printf("mkdir: ok\n");

    int fd = open(FILE_A, O_CREAT | O_EXCL | O_RDWR, 0644);
    check(fd >= 0, "open(O_CREAT)");
    n = write(fd, text, strlen(text));
    printf("write: %zd\n", n);

    off_t offset = lseek(fd, 4, SEEK_SET);
    printf("lseek(4, SEEK_SET): %ld\n", (long)offset);
    n = read(fd, buffer, 5);
    check(n >= 0, "read");
    printf("read: %zd \"%.*s\"\n", n, (int)n, buffer);
    printf("lseek(0, SEEK_CUR): %ld\n", (long)lseek(fd, 0, SEEK_CUR));
    printf("lseek(-4, SEEK_END): %ld\n", (long)lseek(fd, -4, SEEK_END));
    n = read(fd, buffer, sizeof buffer);
    printf("read at end-4: %zd \"%.*s\"\n", n, (int)(n > 0 ? n - 1 : 0), buffer);
    n = read(fd, buffer, sizeof buffer);
    printf("read at end: %zd\n", n);

    check(fstat(fd, &st) == 0, "fstat");
    printf("fstat: size %ld, regular %d, owner mode %04o\n",
           (long)st.st_size, S_ISREG(st.st_mode), (unsigned)(st.st_mode & 0700));
    check(close(fd) == 0, "close");

    fd = open(FILE_C, O_CREAT | O_WRONLY | O_TRUNC, 0600);
    check(fd >= 0, "open(c.txt)");
    check(close(fd) == 0, "close(c.txt)");
    list_directory();

    check(rename(FILE_A, FILE_B) == 0, "rename");
    printf("rename: ok\n");
    errno = 0;
    int status = stat(FILE_A, &st);
    printf("stat(old name): %d, errno is ENOENT: %d\n", status, errno == ENOENT);
    check(stat(FILE_B, &st) == 0, "stat(new name)");
    printf("stat(new name): size %ld\n", (long)st.st_size);
    list_directory();

    fd = open(FILE_B, O_RDONLY);
    check(fd >= 0, "open(b.txt)");
    n = read(fd, buffer, sizeof buffer);
    printf("read b.txt: %zd bytes, same text %d\n", n,
           n == (ssize_t)strlen(text) && memcmp(buffer, text, n) == 0);
    check(close(fd) == 0, "close(b.txt)");

    check(unlink(FILE_B) == 0, "unlink(b.txt)");
    check(unlink(FILE_C) == 0, "unlink(c.txt)");
    printf("unlink: ok\n");
    errno = 0;
    fd = open(FILE_B, O_RDONLY);
    printf("open(missing): %d, errno is ENOENT: %d\n", fd, errno == ENOENT);
    list_directory();
    check(rmdir(DIRECTORY) == 0, "rmdir");
    printf("rmdir: ok\n");
    return 0;
}
