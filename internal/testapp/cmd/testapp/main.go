// Command testapp is the integration tests' workload (see package testapp).
//
//	testapp serve [-addr :8080] [-version V]   serve HTTP (VERSION, ERROR_RATE,
//	                                           LATENCY, UNHEALTHY set the start)
//	testapp exit CODE [-after D] [-say TEXT]   print TEXT, wait D, exit CODE
//	testapp sleep D                            wait D, exit 0
//
// It is built static (CGO_ENABLED=0) so a FROM scratch image can run it.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
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
		err = fmt.Errorf("unknown command %q (serve, exit, sleep)", os.Args[1])
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
