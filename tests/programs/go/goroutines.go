// goroutines.go: channels, sync.WaitGroup, a mutex across goroutines,
// time.Sleep, select with time.After and a worker pool — the Go runtime's
// scheduler on minikvm's threads, futexes and epoll (tests/test_go.py).
package main

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

func counter() {
	var mu sync.Mutex
	var wg sync.WaitGroup
	total := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 10000; j++ {
				mu.Lock()
				total++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fmt.Println("counter:", total)
}

func pipeline() {
	numbers := make(chan int)
	squares := make(chan int)
	go func() {
		for i := 1; i <= 10; i++ {
			numbers <- i
		}
		close(numbers)
	}()
	go func() {
		for n := range numbers {
			squares <- n * n
		}
		close(squares)
	}()
	sum := 0
	for s := range squares {
		sum += s
	}
	fmt.Println("pipeline: sum of squares", sum)
}

func sleeping() {
	start := time.Now()
	time.Sleep(20 * time.Millisecond)
	fmt.Println("sleep: at least 20ms:", time.Since(start) >= 20*time.Millisecond)
}

func timeouts() {
	never := make(chan int)
	select {
	case <-never:
		fmt.Println("select: impossible")
	case <-time.After(30 * time.Millisecond):
		fmt.Println("select: time.After won")
	}
	ticker := time.NewTicker(5 * time.Millisecond)
	ticks := 0
	for range ticker.C {
		ticks++
		if ticks == 3 {
			break
		}
	}
	ticker.Stop()
	fmt.Println("ticker: ticks", ticks)
}

func workers() {
	jobs := make(chan int, 100)
	results := make(chan int, 100)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				time.Sleep(time.Millisecond)
				results <- j * 2
			}
		}()
	}
	for j := 0; j < 20; j++ {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	close(results)
	var got []int
	for r := range results {
		got = append(got, r)
	}
	sort.Ints(got)
	fmt.Println("workers:", len(got), "results, first", got[0], "last", got[len(got)-1])
}

func preemption() {
	previous := runtime.GOMAXPROCS(1)
	var stop int32
	var spins int64
	done := make(chan bool)
	go func() {
		for atomic.LoadInt32(&stop) == 0 {
			spins++
		}
		done <- true
	}()
	time.Sleep(30 * time.Millisecond)
	atomic.StoreInt32(&stop, 1)
	<-done
	runtime.GOMAXPROCS(previous)
	fmt.Println("preemption: the spinning goroutine was interrupted:", spins > 0)
}

func main() {
	counter()
	pipeline()
	sleeping()
	timeouts()
	workers()
	preemption()
	fmt.Println("done")
}
