/* escape_process.c — a guest that tries to start or touch other processes.
 *
 * Usage: escape_process
 *
 * Prints "NAME: 0" or "NAME: ERRNO" for each attempt; the sandbox must
 * answer EPERM (1) to the ones that reach outside it; execve's programs
 * (/bin/sh, this program) are outside the grants when the test runs it
 * with --no-system: ENOENT (2); fork, vfork and clone make children inside
 * the sandbox, which end at once; pid 1 is no process of the sandbox (ESRCH).  After each attempt the program goes on, so a refusal
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

    /* Processes may be made (minikvm.tree): each child is another guest
     * in the same sandbox, and ends at once here. */
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    report("fork", child);
    long raw = syscall(SYS_vfork);
    if (raw == 0)
        _exit(0);
    report("vfork-raw", raw);
    raw = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (raw == 0)
        _exit(0);
    report("clone-process", raw);
    while (wait(NULL) > 0)
        ;
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
