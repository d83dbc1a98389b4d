// Command testapp is the integration tests' workload (see package testapp).
//
//	testapp serve [-addr :8080] [-version V]   serve HTTP (VERSION, ERROR_RATE,
//	                                           LATENCY, UNHEALTHY, CPU_MILLICORES,
//	                                           HOLD_BYTES set the start)
//	testapp exit CODE [-after D] [-say TEXT]   print TEXT, wait D, exit CODE
//	testapp sleep D                            wait D, exit 0
//	testapp load URL [-rps N] [-for D] [-every D]
//	                                           send requests, and print every D
//	                                           the share each version answered
//
// It is built static (CGO_ENABLED=0) so a FROM scratch image can run it.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/hal9ai/hal9-migrate/internal/testapp"
)

func main() {
	if len(os.Args) < 2 {
		os.Args = append(os.Args, "serve")
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "exit":
		err = exit(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "sleep":
		if len(os.Args) < 3 {
			err = fmt.Errorf("sleep: want a duration")
			break
		}
		var d time.Duration
		if d, err = time.ParseDuration(os.Args[2]); err == nil {
			fmt.Println("sleeping", d)
			time.Sleep(d)
		}
	default:
		err = fmt.Errorf("unknown command %q (serve, exit, sleep, load)", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(2)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", envOr("ADDR", ":8080"), "listen address")
	version := fs.String("version", envOr("VERSION", "unknown"), "version to report")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var b testapp.Behaviour
	if v := os.Getenv("ERROR_RATE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("ERROR_RATE: %w", err)
		}
		b.ErrorRate = f
	}
	if v := os.Getenv("LATENCY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("LATENCY: %w", err)
		}
		b.Latency = d
	}
	b.Unhealthy = os.Getenv("UNHEALTHY") == "true"
	if v := os.Getenv("CPU_MILLICORES"); v != "" {
		m, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("CPU_MILLICORES: %w", err)
		}
		b.CPUMillicores = m
	}
	if v := os.Getenv("HOLD_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("HOLD_BYTES: %w", err)
		}
		b.HoldBytes = n
	}
	srv := &http.Server{Addr: *addr, Handler: testapp.New(*version, b).Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
		_ = srv.Close()
	}()
	fmt.Printf("testapp %s listening on %s\n", *version, *addr)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func exit(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("exit: want a code")
	}
	code, err := strconv.Atoi(args[0])
	if err != nil {
		return fmt.Errorf("exit: %w", err)
	}
	fs := flag.NewFlagSet("exit", flag.ContinueOnError)
	after := fs.Duration("after", 0, "wait this long first")
	say := fs.String("say", "", "print this first")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *say != "" {
		fmt.Println(*say)
	}
	time.Sleep(*after)
	fmt.Printf("exiting %d\n", code)
	os.Exit(code)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// load sends GET requests to a URL at a steady rate for a bounded time and
// prints, every interval, how the answers split by X-Version and how many
// failed: the demo's view of the traffic.
func load(args []string) error {
	if len(args) < 1 {
		return fmt.Errorf("load: want a URL")
	}
	url := args[0]
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	rps := fs.Int("rps", 50, "requests per second")
	total := fs.Duration("for", time.Minute, "how long to send")
	every := fs.Duration("every", 5*time.Second, "how often to print the split")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *rps <= 0 || *rps > 1000 {
		return fmt.Errorf("load: -rps must be in 1..1000")
	}
	client := &http.Client{Timeout: 5 * time.Second}
	tick := time.NewTicker(time.Second / time.Duration(*rps))
	defer tick.Stop()
	report := time.NewTicker(*every)
	defer report.Stop()
	end := time.After(*total)
	type result struct {
		version string
		failed  bool
	}
	results := make(chan result, 1024)
	counts, failed := map[string]int{}, 0
	print := func() {
		n := failed
		for _, c := range counts {
			n += c
		}
		if n == 0 {
			fmt.Println("load: no answers yet")
			return
		}
		line := fmt.Sprintf("load: %4d requests", n)
		for _, v := range sortedKeys(counts) {
			line += fmt.Sprintf("  %s %5.1f%%", v, 100*float64(counts[v])/float64(n))
		}
		line += fmt.Sprintf("  errors %5.1f%%", 100*float64(failed)/float64(n))
		fmt.Println(line)
		counts, failed = map[string]int{}, 0
	}
	for {
		select {
		case <-end:
			print()
			return nil
		case <-report.C:
			print()
		case r := <-results:
			if r.failed {
				failed++
			} else {
				counts[r.version]++
			}
		case <-tick.C:
			go func() {
				resp, err := client.Get(url)
				if err != nil {
					results <- result{failed: true}
					return
				}
				resp.Body.Close()
				results <- result{version: resp.Header.Get("X-Version"), failed: resp.StatusCode >= 500}
			}()
		}
	}
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
