/* escape_process.c — a guest that tries to start or touch other processes.
 *
 * Usage: escape_process
 *
 * Prints "NAME: 0" or "NAME: ERRNO" for each attempt; the sandbox must
 * answer EPERM (1) to every one but execve, whose programs (/bin/sh, this
 * program) are outside the grants when the test runs it with --no-system:
 * ENOENT (2).  After each attempt the program goes on, so a refusal
 * that killed the guest instead would show as missing lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long result)
{
    printf("%s: %d\n", name, result < 0 ? errno : 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    char *const argv[] = {"/bin/sh", "-c", "echo escaped > /tmp/minikvm-escaped", NULL};
    char *const envp[] = {NULL};

    report("execve", execve("/bin/sh", argv, envp));
    report("execve-self", execve("/proc/self/exe", argv, envp));

    pid_t child = fork();
    if (child == 0) {            /* must never happen: but if it does, say so */
        printf("fork: child is running\n");
        _exit(0);
    }
    report("fork", child);
    report("vfork-raw", syscall(SYS_vfork));
    report("clone-process", syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
    report("ptrace-attach", ptrace(PTRACE_ATTACH, 1, 0, 0));
    report("kill-init", kill(1, SIGKILL));
    report("process-vm-readv", syscall(SYS_process_vm_readv, 1, 0, 0, 0, 0, 0));
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    report("chroot", syscall(SYS_chroot, "/tmp"));
    report("syscall-unknown", syscall(1000));
    printf("still here\n");
    /* last, since minikvm may count the guest among "every process" */
    report("kill-everyone", kill(-1, SIGKILL));
    return 0;
}
