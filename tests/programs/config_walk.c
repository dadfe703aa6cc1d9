/* config_walk.c — look for a configuration file up the directory tree, as
 * editorconfig, uv, git and pyproject-based tools do.
 *
 * Usage: config_walk NAME
 *
 * From the working directory up to "/", each directory is asked for NAME
 * with stat() and then open(): the first hit is printed ("found: DIR/NAME")
 * and the walk stops.  A missing NAME (ENOENT, ENOTDIR) means "go on up";
 * any other error stops the walk with exit status 1, as the real tools
 * stop on "Permission denied".  No hit at all prints "not found" and
 * exits 0.  Each directory visited is printed too, so a run in a sandbox
 * can be compared line for line with a native one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n", argv[0]);
        return 2;
    }
    char directory[4096];
    if (!getcwd(directory, sizeof directory)) {
        printf("getcwd: %s\n", strerror(errno));
        return 1;
    }
    for (;;) {
        char candidate[4200];
        snprintf(candidate, sizeof candidate, "%s/%s",
                 strcmp(directory, "/") == 0 ? "" : directory, argv[1]);
        printf("looking in %s\n", directory);
        struct stat st;
        if (stat(candidate, &st) == 0) {
            int fd = open(candidate, O_RDONLY);
            if (fd < 0) {
                printf("%s: open: %s\n", candidate, strerror(errno));
                return 1;
            }
            close(fd);
            printf("found: %s\n", candidate);
            return 0;
        }
        if (errno != ENOENT && errno != ENOTDIR) {
            printf("%s: stat: %s\n", candidate, strerror(errno));
            return 1;
        }
        /* and the directory itself must be there to go on from */
        if (stat(directory, &st) != 0) {
            printf("%s: stat: %s\n", directory, strerror(errno));
            return 1;
        }
        if (strcmp(directory, "/") == 0)
            break;
        char *slash = strrchr(directory, '/');
        if (slash == directory)
            slash[1] = '\0';
        else
            *slash = '\0';
    }
    printf("not found\n");
    return 0;
}
