/* A sandboxed program looks for the host's secrets through the default
 * system view, and tries to change the view.
 *
 * Usage: system_view DIR... — each DIR is also tried (the test passes the
 * user's home).  Every reading attempt must fail with ENOENT (the secret
 * does not exist in the view), every write into the view with EACCES (it
 * is read-only); the test compares each line.  See attempts.h. */
#include <dirent.h>
#include <sys/stat.h>
#include "attempts.h"

static const char *secrets[] = {
    "/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers",
    "/etc/sudoers.d", "/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh", "/etc/ssl/private", "/etc/machine-id", "/root", "/root/.ssh", "/home",
    "/var/lib", "/var/log", "/run", "/run/user", "/etc/resolv.conf", "/etc",
};

int main(int argc, char **argv)
{
    char name[4200];
    struct stat st;
    for (unsigned i = 0; i < sizeof secrets / sizeof secrets[0]; i++) {
        const char *path = secrets[i];
        if (strcmp(path, "/etc") == 0)
            path = "/etc/../etc/shadow";       /* through the directory above */
        snprintf(name, sizeof name, "open %s", path);
        try_open(name, path, O_RDONLY);
        snprintf(name, sizeof name, "stat %s", path);
        report(name, stat(path, &st));
    }
    for (int i = 1; i < argc; i++) {
        snprintf(name, sizeof name, "open home %s", argv[i]);
        try_open(name, argv[i], O_RDONLY | O_DIRECTORY);
    }
    try_open("write /etc/passwd", "/etc/passwd", O_WRONLY);
    try_open("create /etc/new", "/etc/new", O_WRONLY | O_CREAT);
    try_open("create /usr/bin/new", "/usr/bin/new", O_WRONLY | O_CREAT);
    report("unlink /etc/passwd", unlink("/etc/passwd"));
    report("rename /etc/hosts", rename("/etc/hosts", "/etc/hosts2"));
    report("mkdir /usr/share/new", mkdir("/usr/share/new", 0755));
    report("chmod /etc/group", chmod("/etc/group", 0777));
    report("symlink /etc/shadow2", symlink("/etc/shadow", "/etc/shadow2"));
    /* the listing of /etc must not name a secret */
    DIR *etc = opendir("/etc");
    struct dirent *entry;
    while (etc && (entry = readdir(etc)) != NULL)
        if (strncmp(entry->d_name, "shadow", 6) == 0 || strncmp(entry->d_name, "gshadow", 7) == 0
            || strncmp(entry->d_name, "sudoers", 7) == 0 || strcmp(entry->d_name, "ssh") == 0)
            printf("listed /etc/%s\n", entry->d_name);
    if (etc)
        closedir(etc);
    return 0;
}
