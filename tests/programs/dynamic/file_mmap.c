/* file_mmap.c — file mappings the way ld.so makes them, each checked:
 * a PROT_READ reservation of a file, MAP_FIXED segments over it at page
 * offsets (one executable), the last page showing the file's bytes beyond
 * the length asked for and zeros beyond the end of the file, mprotect,
 * (a page wholly past the end of the file is not touched: Linux raises
 * SIGBUS there, minikvm shows zeros — docs/reference/syscalls),
 * madvise, MAP_DENYWRITE, MAP_32BIT and munmap of a part.  Prints one line
 * per check; the test compares them with a native run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096
#define FILE_SIZE (2 * PAGE + 100)

int main(void)
{
    char name[] = "file_mmap.data";
    int fd = open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
    unsigned char bytes[FILE_SIZE];
    for (int i = 0; i < FILE_SIZE; i++)
        bytes[i] = (unsigned char)(i * 7 + 1);
    if (fd < 0 || write(fd, bytes, FILE_SIZE) != FILE_SIZE)
        return 1;
    close(fd);
    fd = open(name, O_RDONLY | O_CLOEXEC);

    unsigned char *base = mmap(NULL, 4 * PAGE, PROT_READ, MAP_PRIVATE | MAP_DENYWRITE, fd, 0);
    printf("reservation: %s, byte 5 = %d\n", base == MAP_FAILED ? "failed" : "ok", base[5]);
    unsigned char *text = mmap(base + PAGE, PAGE, PROT_READ | PROT_EXEC,
                               MAP_PRIVATE | MAP_FIXED | MAP_DENYWRITE, fd, PAGE);
    printf("fixed text at base+page: %s, byte = %d\n", text == base + PAGE ? "ok" : "moved",
           text[3]);
    /* the data segment: 50 bytes asked for, the whole page is the file's */
    unsigned char *data = mmap(base + 2 * PAGE, 50, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_FIXED, fd, 2 * PAGE);
    printf("data byte 60 (past the length) = %d (file: %d)\n", data[60], bytes[2 * PAGE + 60]);
    printf("data byte 200 (past the file's end) = %d\n", data[200]);
    data[0] = 99;
    printf("private write: %d\n", data[0]);
    printf("mprotect read-only: %d\n", mprotect(data, PAGE, PROT_READ));
    printf("madvise willneed: %d, dontneed: %d\n", madvise(base, PAGE, MADV_WILLNEED),
           madvise(base + 3 * PAGE, PAGE, MADV_DONTNEED));
    printf("munmap of a part: %d\n", munmap(base + PAGE, PAGE));
    printf("still mapped around it: %d %d\n", base[5], data[0]);
    unsigned char *low = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_32BIT, fd, 0);
    printf("MAP_32BIT below 2 GiB: %s, byte 5 = %d\n",
           low != MAP_FAILED && (uintptr_t)low < 0x80000000u ? "yes" : "no", low[5]);
    unlink(name);
    return 0;
}
