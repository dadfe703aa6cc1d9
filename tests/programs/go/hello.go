// hello.go: the smallest Go program, run natively and under minikvm
// (tests/test_go.py): the Go runtime starts its threads and its poller.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Println("hello from Go")
	fmt.Fprintln(os.Stderr, "args:", len(os.Args))
}
