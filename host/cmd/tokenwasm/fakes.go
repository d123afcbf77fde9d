package main

import (
	"context"
	"encoding/json"
	"io"

	"github.com/tokenwasm/tokenwasm/host/providertest"
)

// runFakes serves the four fake providers on loopback until ctx ends, after printing one JSON line
// with their token URLs and credentials (fake ones), for hosts in other languages to test against.
func runFakes(ctx context.Context, w io.Writer) error {
	set := providertest.StartAll()
	defer set.Close()
	out := map[string]any{}
	for name, f := range map[string]*providertest.Fake{
		"candid": set.Candid, "pattern": set.Pattern, "candescent": set.Candescent, "nikohealth": set.NikoHealth,
	} {
		out[name] = map[string]any{"token_url": f.TokenURL(), "api_url": f.APIURL(), "stats_url": f.URL() + "/_stats", "config": f.Config()}
	}
	if err := json.NewEncoder(w).Encode(out); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
