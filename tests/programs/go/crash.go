// crash.go: a write to a nil map panics; the Go runtime prints the panic
// and its goroutine's stack to stderr and exits with status 2, natively and
// under minikvm (tests/test_go.py compares the first line and the status).
package main

import "fmt"

func main() {
	fmt.Println("about to write to a nil map")
	var m map[string]int
	m["boom"] = 1
	fmt.Println("not reached", m)
}
