// exec.go: os/exec starting other programs — output captured, stdin fed
// from memory (more than a pipe holds), an exit status, a death by
// signal and a program that does not exist — run natively and under
// minikvm (tests/test_processes.py).  Go starts a child with
// clone(CLONE_VFORK|CLONE_VM) and waits for it with wait4.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
)

func main() {
	out, err := exec.Command("/bin/echo", "from", "echo").Output()
	fmt.Printf("echo: %q %v\n", out, err)

	input := bytes.Repeat([]byte("0123456789abcdef"), 16*1024) // 256 KiB
	cat := exec.Command("/bin/cat")
	cat.Stdin = bytes.NewReader(input)
	out, err = cat.Output()
	fmt.Printf("cat: %d bytes back, same: %v, %v\n", len(out), bytes.Equal(out, input), err)

	err = exec.Command("/bin/sh", "-c", "exit 3").Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		fmt.Printf("exit 3: code %d\n", exit.ExitCode())
	} else {
		fmt.Printf("exit 3: %v\n", err)
	}

	err = exec.Command("/bin/sh", "-c", "kill -TERM $$").Run()
	if errors.As(err, &exit) {
		status := exit.Sys().(syscall.WaitStatus)
		fmt.Printf("kill -TERM: signaled %v, signal %v\n", status.Signaled(), status.Signal())
	} else {
		fmt.Printf("kill -TERM: %v\n", err)
	}

	err = exec.Command("./not-there").Run()
	fmt.Printf("missing: %v\n", err)
}
