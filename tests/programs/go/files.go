// files.go: the standard library on files in the granted directory —
// os.WriteFile, os.ReadFile, os.ReadDir, os.Stat, bufio, strconv, sort and
// maps — run natively and under minikvm in a temporary directory
// (tests/test_go.py).
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

func main() {
	dir := "work"
	if err := os.Mkdir(dir, 0o755); err != nil {
		fmt.Println("mkdir:", err)
		os.Exit(1)
	}
	words := map[string]int{}
	for i := 0; i < 5; i++ {
		name := filepath.Join(dir, "file"+strconv.Itoa(i)+".txt")
		text := strings.Repeat("word"+strconv.Itoa(i%3)+" ", i+1)
		if err := os.WriteFile(name, []byte(text+"\n"), 0o644); err != nil {
			fmt.Println("write:", err)
			os.Exit(1)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		fmt.Println("readdir:", err)
		os.Exit(1)
	}
	for _, entry := range entries {
		data, err := os.ReadFile(filepath.Join(dir, entry.Name()))
		if err != nil {
			fmt.Println("read:", err)
			os.Exit(1)
		}
		for _, word := range strings.Fields(string(data)) {
			words[word]++
		}
		info, _ := entry.Info()
		fmt.Printf("%s %d bytes dir=%v\n", entry.Name(), info.Size(), entry.IsDir())
	}
	keys := make([]string, 0, len(words))
	for word := range words {
		keys = append(keys, word)
	}
	sort.Strings(keys)
	for _, word := range keys {
		fmt.Println(word, words[word])
	}
	f, err := os.Create(filepath.Join(dir, "numbers.txt"))
	if err != nil {
		fmt.Println("create:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(f)
	for i := 1; i <= 1000; i++ {
		fmt.Fprintln(w, i*i)
	}
	w.Flush()
	f.Close()
	f, _ = os.Open(filepath.Join(dir, "numbers.txt"))
	scanner := bufio.NewScanner(f)
	sum := 0
	for scanner.Scan() {
		n, err := strconv.Atoi(scanner.Text())
		if err != nil {
			fmt.Println("atoi:", err)
		}
		sum += n
	}
	f.Close()
	fmt.Println("sum of squares to 1000:", sum)
	_, err = os.ReadFile(filepath.Join(dir, "missing.txt"))
	fmt.Println("missing file:", os.IsNotExist(err))
	if err := os.RemoveAll(dir); err != nil {
		fmt.Println("removeall:", err)
	}
	_, err = os.Stat(dir)
	fmt.Println("removed:", os.IsNotExist(err))
}
