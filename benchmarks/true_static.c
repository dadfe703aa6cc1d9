/* true_static.c — /bin/true as a static program: the child that
 * fork_exec_wait.c and the shell loop run, so that what is timed is the
 * fork, the exec and the wait, not a dynamic loader's start-up. */
int main(void)
{
    return 0;
}
