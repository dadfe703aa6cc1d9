/* A sandboxed program tries to type into the user's terminal: TIOCSTI
 * (push a byte into the input queue), TIOCLINUX (the console's selection
 * paste) and TIOCCONS (take the console's output).  Each must fail with
 * EPERM; prints one line per request and exits 0 only if all were refused. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

int main(void) {
    char byte = 'x';
    char subcode = 2;   /* TIOCL_SETSEL */
    int refused = 0;
    struct { unsigned long request; void *arg; const char *name; } tries[] = {
        {TIOCSTI, &byte, "TIOCSTI"}, {TIOCLINUX, &subcode, "TIOCLINUX"},
        {TIOCCONS, 0, "TIOCCONS"}};
    for (int i = 0; i < 3; i++) {
        int result = ioctl(0, tries[i].request, tries[i].arg);
        printf("%s %d %s\n", tries[i].name, result, result < 0 ? strerror(errno) : "");
        refused += result < 0 && errno == EPERM;
    }
    return refused == 3 ? 0 : 1;
}
