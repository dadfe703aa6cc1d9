/* malloc_limit.c — allocate until malloc says no, then carry on.
 *
 * Under minikvm with a small --memory, running out of memory must be an
 * ordinary error: malloc returns NULL (errno ENOMEM), the program frees
 * what it had, allocates again, and exits 0.  Never run it natively: it
 * would allocate until the host's own limits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK (1UL << 20)
#define MAX_BLOCKS (1UL << 16)   /* 64 GiB: beyond any --memory minikvm is given */

struct block { struct block *next; };

static struct block *allocate(size_t limit, size_t *count, int *error)
{
    struct block *head = NULL;
    *count = 0;
    while (*count < limit) {
        errno = 0;
        struct block *p = malloc(BLOCK);
        if (p == NULL) {
            *error = errno;
            break;
        }
        memset(p, 0xA5, BLOCK);   /* touch every page */
        p->next = head;
        head = p;
        (*count)++;
    }
    return head;
}

static void release(struct block *head)
{
    while (head) {
        struct block *next = head->next;
        free(head);
        head = next;
    }
}

int main(void)
{
    size_t count, again;
    int error = 0, again_error = 0;
    struct block *blocks = allocate(MAX_BLOCKS, &count, &error);
    printf("malloc returned NULL after %zu MiB, errno %s\n", count,
           error == ENOMEM ? "ENOMEM" : "not ENOMEM");
    errno = 0;
    void *huge = malloc(1UL << 40);
    printf("malloc of 1 TiB: %s\n", huge ? "succeeded" : "NULL");
    release(blocks);
    blocks = allocate(count / 2, &again, &again_error);
    printf("after free: %s\n", again == count / 2 ? "half of it allocates again"
                                                   : "the memory did not come back");
    release(blocks);
    return 0;
}
