/* resolve NAME: the IPv4 addresses glibc's getaddrinfo finds for NAME, one
 * a line, through the system resolver (nsswitch.conf, /etc/hosts,
 * /etc/resolv.conf's name servers).  Exit 2 with gai_strerror's text when
 * it finds none.  Built dynamic: glibc's resolver lives in libc.so and its
 * NSS modules are loaded by ld.so (tests/test_dns.py). */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    struct addrinfo hints, *found, *each;
    char text[INET_ADDRSTRLEN];
    if (argc != 2) {
        fprintf(stderr, "usage: resolve NAME\n");
        return 64;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    int status = getaddrinfo(argv[1], NULL, &hints, &found);
    if (status != 0) {
        printf("%s: %s\n", argv[1], gai_strerror(status));
        return 2;
    }
    for (each = found; each; each = each->ai_next) {
        struct sockaddr_in *address = (struct sockaddr_in *)each->ai_addr;
        printf("%s\n", inet_ntop(AF_INET, &address->sin_addr, text, sizeof text));
    }
    freeaddrinfo(found);
    return 0;
}
