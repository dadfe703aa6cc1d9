/* stdin.c — copies stdin to stdout in upper case; reports the byte count on stderr.
 *
 * Only ASCII letters change (no locale), so the output is the same under
 * every libc.  Reading stops at end of file.
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    char buffer[4096];
    unsigned long total = 0;
    ssize_t n;

    while ((n = read(0, buffer, sizeof buffer)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            if (buffer[i] >= 'a' && buffer[i] <= 'z')
                buffer[i] -= 'a' - 'A';
        for (ssize_t done = 0; done < n;) {
            ssize_t written = write(1, buffer + done, n - done);
            if (written < 0) {
                perror("write");
                return 1;
            }
            done += written;
        }
        total += n;
    }
    if (n < 0) {
        perror("read");
        return 1;
    }
    fprintf(stderr, "%lu bytes\n", total);
    return 0;
}
