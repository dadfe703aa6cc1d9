/* signal_ends.c — ways a signal ends (or does not end) a program.
 *
 * Usage: signal_ends MODE, one of
 *   raise-term        raise(SIGTERM)                          -> killed, 143
 *   kill-usr1         kill(getpid(), SIGUSR1)                 -> killed, 138
 *   blocked           block SIGTERM, raise it, say so, unblock -> killed, 143
 *   realtime          raise(SIGRTMIN + 1)                      -> killed, 128 + its number
 *   alarm-pause       alarm(1), pause()                        -> killed by SIGALRM, 142
 *   itimer-sleep      a 100 ms ITIMER_REAL, then sleep(10)     -> killed by SIGALRM, 142
 *   sigsuspend        SIGALRM blocked, 50 ms timer, sigsuspend -> killed by SIGALRM, 142
 *   ignored-alarm     SIGALRM ignored, 50 ms timer, sleep      -> exits 0
 *   sigreturn         rt_sigreturn with no signal frame        -> SIGSEGV, 139
 *   handler           a handler for SIGUSR1, then raise it     -> the handler runs, exits 0
 *   stop              raise(SIGTSTP)                           -> stops on Linux; continues
 *                                                                 in minikvm (no job control)
 *   pause             pause() with nothing to wake it          -> only a time limit ends it
 *   sleep             sleep(1000)                              -> only a time limit ends it
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

static void handled(int sig)
{
    (void)sig;
    printf("handled\n");
}

static void timer_ms(long ms)
{
    struct itimerval timer = {{0, 0}, {ms / 1000, (ms % 1000) * 1000}};
    setitimer(ITIMER_REAL, &timer, NULL);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    sigset_t set;
    sigemptyset(&set);
    if (strcmp(mode, "raise-term") == 0) {
        raise(SIGTERM);
    } else if (strcmp(mode, "kill-usr1") == 0) {
        kill(getpid(), SIGUSR1);
    } else if (strcmp(mode, "blocked") == 0) {
        sigaddset(&set, SIGTERM);
        sigprocmask(SIG_BLOCK, &set, NULL);
        raise(SIGTERM);
        printf("still here with SIGTERM pending\n");
        sigprocmask(SIG_UNBLOCK, &set, NULL);
    } else if (strcmp(mode, "realtime") == 0) {
        raise(SIGRTMIN + 1);
    } else if (strcmp(mode, "alarm-pause") == 0) {
        alarm(1);
        pause();
    } else if (strcmp(mode, "itimer-sleep") == 0) {
        timer_ms(100);
        sleep(10);
    } else if (strcmp(mode, "sigsuspend") == 0) {
        sigaddset(&set, SIGALRM);
        sigprocmask(SIG_BLOCK, &set, NULL);
        timer_ms(50);
        sigemptyset(&set);
        sigsuspend(&set);
    } else if (strcmp(mode, "ignored-alarm") == 0) {
        signal(SIGALRM, SIG_IGN);
        timer_ms(50);
        usleep(200000);
        printf("survived an ignored alarm\n");
        return 0;
    } else if (strcmp(mode, "sigreturn") == 0) {
        syscall(SYS_rt_sigreturn);
    } else if (strcmp(mode, "handler") == 0) {
        signal(SIGUSR1, handled);
        raise(SIGUSR1);
        return 0;
    } else if (strcmp(mode, "stop") == 0) {
        raise(SIGTSTP);
        printf("continued after SIGTSTP\n");
        return 0;
    } else if (strcmp(mode, "pause") == 0) {
        pause();
    } else if (strcmp(mode, "sleep") == 0) {
        sleep(1000);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("not ended by the signal\n");
    return 1;
}
