/* signal_sender.c — a signal one process sends another carries the sender's
 * pid and uid in its siginfo_t (si_pid, si_uid, si_code SI_USER), both
 * ways: a child signalling its parent, the parent signalling the child.
 * The output is compared with a native run (tests/test_process_views.py).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got_pid, got_uid, got_code, got;

static void on_usr1(int sig, siginfo_t *info, void *context)
{
    (void)sig;
    (void)context;
    got_pid = info->si_pid;
    got_uid = info->si_uid;
    got_code = info->si_code;
    got = 1;
}

static void wait_for_usr1(sigset_t *unblocked)
{
    while (!got)
        sigsuspend(unblocked);
    got = 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_usr1;
    action.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &action, NULL);
    sigset_t blocked, unblocked;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    sigprocmask(SIG_BLOCK, &blocked, &unblocked);

    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        kill(parent, SIGUSR1);
        wait_for_usr1(&unblocked);
        printf("child: si_pid is its parent: %s, si_uid is its uid: %s, SI_USER: %s\n",
               got_pid == parent ? "yes" : "no", got_uid == (int)getuid() ? "yes" : "no",
               got_code == SI_USER ? "yes" : "no");
        _exit(0);
    }
    wait_for_usr1(&unblocked);
    printf("parent: si_pid is the child: %s, si_uid is its uid: %s, SI_USER: %s\n",
           got_pid == child ? "yes" : "no", got_uid == (int)getuid() ? "yes" : "no",
           got_code == SI_USER ? "yes" : "no");
    kill(child, SIGUSR1);
    int status = 0;
    waitpid(child, &status, 0);
    printf("child exited %d\n", WEXITSTATUS(status));
    return 0;
}
