"""Layer 6 — system calls, one module per family.

====================  ==============================================================
``base``              the table entry (:class:`~minikvm.syscalls.base.Syscall`) and argument helpers
``files``             open, read, write, lseek, and the path helpers the file families share
``metadata``          stat, statx, statfs, readlink, access, the working directory, umask
``procfs``            the synthesized /proc: the tree, a process's own files, opening them
``proc_machine``      /proc's files about the machine: cpuinfo, meminfo, uptime, loadavg, stat
``pty``               /dev/ptmx and /dev/pts/N: the pseudo-terminals the sandbox makes
``terminal``          terminal ioctls: window size, termios, the foreground group
``descriptors``       dup, fcntl, ioctl, close_range, pipes, eventfd, sendfile, copy_file_range
``directories``       listings, mkdir, unlink, rename, link, symlink
``attributes``        truncate, sync, times, mode, owner
``memory``            brk, mmap, munmap, mprotect, mremap, madvise
``process``           exit, ids, thread setup, limits, signals sent to itself, refusals
``exec``              execve and execveat: loading a new program
``time``              clocks and sleeping
``timeouts``          time values a guest passes, read once and checked
``signals``           signal numbers, actions, delivery, the alarm, sleeping
``signal_actions``    rt_sigaction, rt_sigprocmask, rt_sigpending, waiting for a signal
``signal_handlers``   running a handler: its frame, rt_sigreturn, sigaltstack, faults
``info``              uname, getrandom, sysinfo, scheduler
``poll``              poll, ppoll, select
``epoll``             epoll_create1, epoll_ctl, epoll_wait: level, edge, one-shot
``timerfd``           timerfd_create, timerfd_settime, timerfd_gettime: timers as fds
``signalfd``          signalfd4: pending signals read as a file
``memfd``             memfd_create: a file that is only memory, with seals
``xattr``             getxattr, listxattr and their l/f forms: read-only
``sync``              futex
``sockets``           the socket file: the guest's socket ABI, sockaddrs, the host socket
``net``               the socket calls, as far as the policy allows
``requests``          minikvm's request API (``include/minikvm.h``)
``vsyscall``          the legacy vsyscall page, emulated
``table``             all of them, by number
``trace``             ``--trace`` output in strace's format
``dispatch``          from a syscall exit to a handler and back
====================  ==============================================================
"""
