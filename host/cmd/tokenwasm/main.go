// Command tokenwasm gets OAuth 2.0 access tokens through the tokenwasm plugin.
//
//	tokenwasm demo        each provider and grant against local fake providers, then again from the cache
//	tokenwasm token ...   a real token request (secrets from the environment or files, never flags)
//	tokenwasm describe    the providers the plugin knows
//	tokenwasm fakes       run the six fake providers on loopback; print their URLs and the lines to paste
//	tokenwasm version     the command's, the ABI's and the plugin's versions
//
// Exit status: 0 success, 1 another failure, 2 usage, 3 refused by the provider (4xx), 4 transport
// or policy, 5 rate limited; -h lists them.
//
// It is a module of its own (its fleet demo, demo -redis, needs go-redis, which the tokenwasm module
// does not depend on): go install -C host/cmd/tokenwasm . from a checkout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
)

const usage = `usage: tokenwasm <command> [flags]

commands:
  demo       get a token from each of the six providers (every grant of the built-in ones) from
             local fake providers, then again from the cache;
             demo -redis URL also shows two processes sharing one token through Redis
  token      get a token: tokenwasm token -provider P -client-id ID [flags]; -h lists the flags
  describe   print the providers the plugin knows (JSON)
  fakes      run the six fake providers on loopback until interrupted; prints their URLs and
             credentials as JSON, and the lines to paste (fakes -h: fixed ports, -tls)
  version    print the command's, the ABI's and the plugin's versions (JSON)

Results and errors are JSON on stdout; an error is {"error":{"kind","message",...}}.
Every command takes -h. Exit status:
  0  success (and -h)
  1  another failure (the plugin, a file, an interrupt)
  2  usage: an unknown command or flag, an extra argument, a request the plugin refuses to encode
  3  refused by the provider (a 4xx answer: invalid_client, invalid_grant, ...)
  4  transport or policy: unreachable, timed out, a 5xx or unreadable answer, a host not allowed
  5  rate limited by the provider (429): retry_after_ms says when to try again
`

// Exit statuses, by cause.
const (
	exitOK        = 0
	exitFailure   = 1
	exitUsage     = 2
	exitRefused   = 3
	exitTransport = 4
	exitRateLimit = 5
)

// usageError is a command line the command cannot run.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	ctx, stop := interrupts(context.Background(), os.Stderr)
	code := run(ctx, os.Stdout, os.Stderr, os.Args[1:])
	stop()
	os.Exit(code)
}

// interrupts returns a context that the first Ctrl-C (SIGINT) cancels, carrying another (see
// abortContext) that only a second one cancels: a command in the middle of something it must not
// leave half-done (a one-time grant's exchange, whose provider has already used up the credential)
// finishes it on the first, and says so on stderr.
func interrupts(parent context.Context, stderr io.Writer) (context.Context, func()) {
	hard, cancelHard := context.WithCancel(parent)
	soft, cancelSoft := context.WithCancel(context.WithValue(hard, abortKey{}, hard))
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			cancelSoft()
		case <-done:
			return
		}
		select {
		case <-sig:
			fmt.Fprintln(stderr, "tokenwasm: interrupted again: aborting")
			cancelHard()
		case <-done:
		}
	}()
	return soft, func() {
		signal.Stop(sig)
		close(done)
		cancelSoft()
		cancelHard()
	}
}

type abortKey struct{}

// abortContext is the context of work that only a second Ctrl-C stops (or ctx itself, outside main).
func abortContext(ctx context.Context) context.Context {
	if hard, ok := ctx.Value(abortKey{}).(context.Context); ok {
		return hard
	}
	return ctx
}

// run runs one command and returns its exit status; results and errors go to stdout as JSON, help
// to stderr (or stdout when asked for with help).
func run(ctx context.Context, stdout, stderr io.Writer, args []string) int {
	if len(args) == 0 {
		return fail(stdout, usageError{"no command (tokenwasm -h lists them)"})
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "demo":
		err = runDemo(ctx, stdout, rest)
	case "token":
		err = runToken(ctx, stdout, stderr, rest)
	case "describe":
		err = noFlags(cmd, rest, stderr, func() error { return runDescribe(ctx, stdout) })
	case "fakes":
		err = runFakes(ctx, stdout, stderr, rest)
	case "version":
		err = noFlags(cmd, rest, stderr, func() error { return runVersion(ctx, stdout) })
	case "fleet-child": // the second process of `demo -redis`
		if len(rest) != 1 {
			return fail(stdout, usageError{"usage: tokenwasm fleet-child REDIS_URL (started by demo -redis)"})
		}
		err = runFleetChild(ctx, stdout, rest[0])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprint(stderr, usage)
		return fail(stdout, usageError{"unknown command " + strconv.Quote(cmd)})
	}
	return fail(stdout, err)
}

// noFlags runs a command that takes no flags and no arguments, after answering -h.
func noFlags(name string, args []string, stderr io.Writer, f func() error) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	return f()
}

// parse parses args into fs: -h is flag.ErrHelp, a bad flag or an argument left over a usageError.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return nil
}

// fail prints err as JSON on stdout and returns its exit status.
func fail(stdout io.Writer, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK // -h printed the flags; asking for help is no failure
	}
	ae, code := classify(err)
	b, _ := json.Marshal(abi.Result{Error: ae})
	fmt.Fprintln(stdout, string(b))
	return code
}

// classify gives err's JSON form and exit status.
func classify(err error) (*abi.Error, int) {
	var ue usageError
	if errors.As(err, &ue) {
		return &abi.Error{Kind: "usage", Message: ue.msg}, exitUsage
	}
	var ae *abi.Error
	if !errors.As(err, &ae) {
		return &abi.Error{Kind: "failure", Message: err.Error()}, exitFailure
	}
	switch {
	case ae.Kind == abi.KindRateLimited:
		return ae, exitRateLimit
	case ae.Kind == abi.KindTransport, ae.Kind == abi.KindPolicy, ae.Kind == abi.KindServerError, ae.Kind == abi.KindMalformedResponse:
		return ae, exitTransport
	case ae.Status == 0:
		return ae, exitUsage // refused before sending (no provider answered): the request itself is wrong
	}
	return ae, exitRefused
}

func runDescribe(ctx context.Context, w io.Writer) error {
	d, err := describe(ctx)
	if err != nil {
		return err
	}
	var pretty any
	_ = json.Unmarshal(d, &pretty)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(pretty)
}

// runVersion prints the command's module version, the ABI's and the plugin's.
func runVersion(ctx context.Context, w io.Writer) error {
	v := "(devel)"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		v = bi.Main.Version
	}
	d, err := describe(ctx)
	if err != nil {
		return err
	}
	var desc struct {
		Version string `json:"version"`
	}
	_ = json.Unmarshal(d, &desc)
	return json.NewEncoder(w).Encode(map[string]string{"tokenwasm": v, "abi": abi.Version, "plugin": desc.Version})
}

// describe asks the embedded plugin for its describe answer.
func describe(ctx context.Context) (json.RawMessage, error) {
	c, err := host.New(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close(ctx)
	return c.Describe(ctx)
}
