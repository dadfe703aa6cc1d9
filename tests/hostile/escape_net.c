/* escape_net.c — a guest that tries to reach the network.
 *
 * Usage: escape_net tcp  HOST PORT    connect, send "ping", print the reply
 *        escape_net udp  HOST PORT    send one datagram "ping"
 *        escape_net unix PATH         connect to a unix socket, send "ping"
 *        escape_net listen PORT       bind 127.0.0.1:PORT and listen
 *        escape_net raw               a raw IP socket
 *
 * Each step prints "STEP: 0" or "STEP: ERRNO" and the program stops at the
 * first failure; a reply is printed as "reply: TEXT".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int step(const char *name, long result)
{
    printf("%s: %d\n", name, result < 0 ? errno : 0);
    return result >= 0;
}

static struct sockaddr_in ipv4(const char *host, const char *port)
{
    struct sockaddr_in address;
    memset(&address, 0, sizeof address);
    address.sin_family = AF_INET;
    address.sin_port = htons((unsigned short)atoi(port));
    inet_pton(AF_INET, host, &address.sin_addr);
    return address;
}

static void converse(int fd)
{
    char reply[64];
    if (!step("send", send(fd, "ping", 4, 0)))
        return;
    ssize_t got = recv(fd, reply, sizeof reply - 1, 0);
    if (step("recv", got)) {
        reply[got] = '\0';
        printf("reply: %s\n", reply);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 4 && strcmp(argv[1], "tcp") == 0) {
        struct sockaddr_in address = ipv4(argv[2], argv[3]);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (step("socket", fd) &&
            step("connect", connect(fd, (struct sockaddr *)&address, sizeof address)))
            converse(fd);
    } else if (argc == 4 && strcmp(argv[1], "udp") == 0) {
        struct sockaddr_in address = ipv4(argv[2], argv[3]);
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (step("socket", fd))
            step("sendto", sendto(fd, "ping", 4, 0, (struct sockaddr *)&address,
                                  sizeof address));
    } else if (argc == 3 && strcmp(argv[1], "unix") == 0) {
        struct sockaddr_un address;
        memset(&address, 0, sizeof address);
        address.sun_family = AF_UNIX;
        strncpy(address.sun_path, argv[2], sizeof address.sun_path - 1);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (step("socket", fd) &&
            step("connect", connect(fd, (struct sockaddr *)&address, sizeof address)))
            converse(fd);
    } else if (argc == 3 && strcmp(argv[1], "listen") == 0) {
        struct sockaddr_in address = ipv4("127.0.0.1", argv[2]);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (step("socket", fd) &&
            step("bind", bind(fd, (struct sockaddr *)&address, sizeof address)))
            step("listen", listen(fd, 1));
        if (fd >= 0)
            step("listen-unbound", listen(fd, 1));   /* Linux would pick a port */
    } else if (argc == 2 && strcmp(argv[1], "raw") == 0) {
        step("socket-raw", socket(AF_INET, SOCK_RAW, 1));
        step("socket-packet", socket(17 /* AF_PACKET */, SOCK_RAW, 0));
        step("socket-netlink", socket(16 /* AF_NETLINK */, SOCK_RAW, 0));
    } else {
        fprintf(stderr, "usage: see the comment at the top of escape_net.c\n");
        return 2;
    }
    return 0;
}
