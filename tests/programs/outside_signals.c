/* Signals sent to the program from outside (tests/test_outside_signals.py).
 *
 *   outside_signals handler SIG     a handler for SIG; "ready", then wait for it
 *                                   in pause(); print "handled SIG", exit 0
 *   outside_signals spin SIG        the same, waiting in a loop with no system call
 *   outside_signals default         "ready", then pause(): a default action ends it
 *   outside_signals read restart|eintr
 *                                   a SIGUSR1 handler with or without SA_RESTART,
 *                                   "ready", then read(0) of a pipe: print what
 *                                   read returned once the signal came
 *   outside_signals stop            a SIGCONT handler; "ready", then wait for
 *                                   SIGCONT (the test stops and continues us)
 *   outside_signals flood           count SIGUSR1s until SIGTERM; print "flooded"
 *
 * Every line is written with write(2): nothing waits in a stdio buffer
 * when a signal ends the program.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static volatile sig_atomic_t count;

static void say(const char *text) { write(1, text, strlen(text)); }

static void on_signal(int sig) {
    got = sig;
    count++;
    say("in handler\n");
}

static void on_count(int sig) { (void)sig; count++; }
static void on_term(int sig) { got = sig; }

static void catch(int sig, void (*handler)(int), int flags) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    sigaction(sig, &action, 0);
}

int main(int argc, char **argv) {
    char line[64];
    if (argc < 2) return 2;
    if (!strcmp(argv[1], "handler") || !strcmp(argv[1], "spin")) {
        int sig = atoi(argv[2]);
        catch(sig, on_signal, 0);
        say("ready\n");
        if (!strcmp(argv[1], "handler"))
            while (!got) pause();
        else
            while (!got) { }        /* no system call: the signal must still come */
        snprintf(line, sizeof line, "handled %d\n", (int)got);
        say(line);
        return 0;
    }
    if (!strcmp(argv[1], "default")) {
        say("ready\n");
        for (;;) pause();
    }
    if (!strcmp(argv[1], "read")) {
        char data[64];
        catch(SIGUSR1, on_signal, strcmp(argv[2], "restart") ? 0 : SA_RESTART);
        say("ready\n");
        ssize_t n = read(0, data, sizeof data - 1);
        if (n < 0)
            snprintf(line, sizeof line, "read -1 %s\n", errno == EINTR ? "EINTR" : "other");
        else
            snprintf(line, sizeof line, "read %d: %.*s", (int)n, (int)n, data);
        say(line);
        return 0;
    }
    if (!strcmp(argv[1], "stop")) {
        catch(SIGCONT, on_signal, 0);
        say("ready\n");
        while (got != SIGCONT) pause();
        say("continued\n");
        return 0;
    }
    if (!strcmp(argv[1], "flood")) {
        catch(SIGUSR1, on_count, 0);
        catch(SIGTERM, on_term, 0);
        say("ready\n");
        while (got != SIGTERM) pause();
        snprintf(line, sizeof line, "flooded %s\n", count > 0 ? "yes" : "no");
        say(line);
        return 0;
    }
    return 2;
}
