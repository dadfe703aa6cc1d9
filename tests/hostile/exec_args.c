/* exec_args.c — a guest that hands execve arguments built to hurt the host.
 *
 * Usage: exec_args
 *
 * Prints "NAME: ERRNO" for each attempt (tests/test_exec.py checks them):
 * none may succeed, none may make minikvm read without bound, hold host
 * memory without bound, or raise a traceback.  After each, the program goes
 * on, so a guest killed instead of answered shows as missing lines.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "attempts.h"

#define PAGE 4096

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    char *empty_env[] = {NULL};
    char *self = "/proc/self/exe";

    /* 8 M pointers, all to one empty string: 64 MiB of array, 8 M strings */
    size_t count = 8u << 20;
    char **many = mmap(NULL, (count + 1) * sizeof *many, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (many == MAP_FAILED) {
        printf("mmap failed\n");
        return 1;
    }
    for (size_t i = 0; i < count; i++)
        many[i] = "";
    many[count] = NULL;
    report("huge-argv", syscall(SYS_execve, self, many, empty_env));
    report("huge-envp", syscall(SYS_execve, self, empty_env, many));
    munmap(many, (count + 1) * sizeof *many);

    /* two pages, the second unmapped: things that run into the hole */
    char *area = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    munmap(area + PAGE, PAGE);
    memset(area, 'a', PAGE);                       /* no NUL anywhere in the page */
    char *unterminated[] = {area, NULL};
    report("unterminated-arg", syscall(SYS_execve, self, unterminated, empty_env));
    report("unterminated-env", syscall(SYS_execve, self, empty_env, unterminated));
    report("unterminated-path", syscall(SYS_execve, area + PAGE - 64, empty_env, empty_env));
    /* a pointer array that fills the page without its NULL */
    char **array = (char **)area;
    for (int i = 0; i < PAGE / (int)sizeof *array; i++)
        array[i] = "x";
    report("array-into-hole", syscall(SYS_execve, self, array, empty_env));
    /* an array whose last pointer straddles the hole */
    report("pointer-across-hole", syscall(SYS_execve, self, (char **)(area + PAGE - 4),
                                          empty_env));
    report("kernel-pointer", syscall(SYS_execve, (char *)0xffffffff81000000UL, empty_env,
                                     empty_env));
    char *kernel_args[] = {(char *)0xffff800000000000UL, NULL};
    report("kernel-string", syscall(SYS_execve, self, kernel_args, empty_env));
    report("execveat-bad-fd", syscall(SYS_execveat, 12345, "", empty_env, empty_env,
                                      0x1000 /* AT_EMPTY_PATH */));
    report("execveat-stdin", syscall(SYS_execveat, 0, "", empty_env, empty_env, 0x1000));
    printf("still here\n");
    return 0;
}
