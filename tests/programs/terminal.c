/* The terminal from inside (tests/test_terminal.py).
 *   terminal roundtrip   TCGETS, clear ECHO with TCSETS, TCGETS again: print both lflags
 *   terminal raw-crash   put the terminal in raw mode, say "raw", then crash (SIGSEGV) */
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct termios t;
    if (argc < 2 || tcgetattr(0, &t) != 0) return 2;
    if (!strcmp(argv[1], "roundtrip")) {
        tcflag_t before = t.c_lflag;
        t.c_lflag &= ~ECHO;
        if (tcsetattr(0, TCSANOW, &t) != 0) return 3;
        struct termios again;
        tcgetattr(0, &again);
        printf("echo before %d after %d isatty %d\n", !!(before & ECHO),
               !!(again.c_lflag & ECHO), isatty(0));
        t.c_lflag = before;
        tcsetattr(0, TCSANOW, &t);
        return 0;
    }
    cfmakeraw(&t);
    tcsetattr(0, TCSANOW, &t);
    write(1, "raw\n", 4);
    *(volatile int *)0 = 1;
    return 0;
}
