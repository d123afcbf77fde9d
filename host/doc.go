// Package host gets OAuth 2.0 tokens from healthcare and banking providers, as
// golang.org/x/oauth2/clientcredentials does, through the tokenwasm plugin that knows each
// provider's dialect (docs/providers.md in the repository).
//
// A Config describes one credential set; its TokenSource, Client and Token methods are x/oauth2's:
//
//	cfg := host.Config{Provider: host.NikoHealth, Domain: "acme", ClientID: id, ClientSecret: secret}
//	api := cfg.Client(ctx) // Authorization: Bearer on every request; a 401 gets one new token
//
// Underneath, a Runtime runs the plugin: a lean Extism host on wazero that pools plugin instances,
// supplies HTTP (to an allow-list of token hosts) and the token cache through the plugin's imports,
// shares one fetch per credential set and refreshes tokens ahead of expiry. New's options set its
// cache (host/rediscache for a fleet), logger, observers and limits. A failure the provider or the
// plugin reports is an *abi.Error: errors.Is(err, abi.ErrRateLimited) tests its kind.
//
// All provider knowledge lives in the plugin (abi/ABI.md); this package holds all I/O.
package host
