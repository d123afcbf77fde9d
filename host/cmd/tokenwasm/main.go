// Command tokenwasm gets OAuth 2.0 access tokens through the tokenwasm plugin.
//
//	tokenwasm demo        every provider and grant against local fake providers, then again from the cache
//	tokenwasm token ...   a real token request (secrets from the environment or files, never flags)
//	tokenwasm describe    the providers the plugin knows
//	tokenwasm fakes       run the fake providers on loopback and print their token URLs
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

	"github.com/tokenwasm/tokenwasm/abi"
	"github.com/tokenwasm/tokenwasm/host"
)

const usage = `usage: tokenwasm <command> [flags]

commands:
  demo       get a token from every provider and grant from local fake providers, twice;
             demo -redis URL also shows two processes sharing one token through Redis
  token      get a token: tokenwasm token -provider P -client-id ID [flags]; -h lists the flags
  describe   print the providers the plugin knows (JSON)
  fakes      run the fake providers on loopback until interrupted; prints their token URLs
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	switch os.Args[1] {
	case "demo":
		err = runDemo(ctx, os.Stdout, os.Args[2:])
	case "token":
		err = runToken(ctx, os.Stdout, os.Args[2:])
	case "describe":
		err = runDescribe(ctx, os.Stdout)
	case "fakes":
		err = runFakes(ctx, os.Stdout)
	case "fleet-child": // the second process of `demo -redis`
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: tokenwasm fleet-child REDIS_URL (started by demo -redis)")
			os.Exit(2)
		}
		err = runFleetChild(ctx, os.Stdout, os.Args[2])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if errors.Is(err, flag.ErrHelp) {
		return // -h printed the flags; asking for help is no failure
	}
	if err != nil {
		var ae *abi.Error
		if errors.As(err, &ae) {
			b, _ := json.Marshal(abi.Result{Error: ae})
			fmt.Println(string(b))
		} else {
			fmt.Fprintln(os.Stderr, "tokenwasm:", err)
		}
		os.Exit(1)
	}
}

func runDescribe(ctx context.Context, w io.Writer) error {
	c, err := host.New(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	d, err := c.Describe(ctx)
	if err != nil {
		return err
	}
	var pretty any
	_ = json.Unmarshal(d, &pretty)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(pretty)
}
