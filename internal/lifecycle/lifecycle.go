// Package lifecycle reads testdata/lifecycle: scripted token lives that every host's runner drives
// with its clock moved, not slept (host/lifecycle_test.go, plugin/envoy/lifecycle_test.go, and
// host/js/test/lifecycle.test.js, which reads the same files).
package lifecycle

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// Scenario is one file of testdata/lifecycle.
type Scenario struct {
	About    string          `json:"about"`
	Request  json.RawMessage `json:"request"` // a TokenRequest without token_url: each runner adds its provider's
	LifeMS   int64           `json:"life_ms"`
	Schedule struct {
		RefreshAtMS int64 `json:"refresh_at_ms"`
		StaleAtMS   int64 `json:"stale_at_ms"`
	} `json:"schedule"`
	Events []Event           `json:"events"`
	Hosts  map[string]string `json:"hosts"`
}

// Event is one moment of the life: the clock at t0 + AtMS, the provider's answer from then on when
// Provider is set, one call, and what it must come to.
type Event struct {
	AtMS     int64     `json:"at_ms"`
	Provider *Provider `json:"provider"`
	Call     string    `json:"call"` // "token" or "api_401"
	Want     Want      `json:"want"`
	Note     string    `json:"note"`
}

// Provider is how the token endpoint answers: Status 200 is a token; another status is answered
// with an empty body, and RetryAfter (seconds) as Retry-After when set.
type Provider struct {
	Status     int    `json:"status"`
	RetryAfter string `json:"retry_after"`
}

// Want is what an event must come to.
type Want struct {
	Decision string `json:"decision"` // memory, background, fetch, fetch_failed_held, error (token calls)
	Token    string `json:"token"`    // the token's label (api_401: what the next call gets)
	Retry    *bool  `json:"retry"`    // api_401: whether the request was tried again with a new token
	Error    *struct {
		Kind         string `json:"kind"`
		Retryable    bool   `json:"retryable"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	} `json:"error"`
	Requests int64 `json:"requests"` // token requests the provider received so far
}

// Decisions of token events.
const (
	Memory          = "memory"
	Background      = "background"
	Fetch           = "fetch"
	FetchFailedHeld = "fetch_failed_held"
	Error           = "error"
)

// Load reads testdata/lifecycle/<name> from the repository's root.
func Load(name string) (*Scenario, error) {
	_, here, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(here), "..", "..", "testdata", "lifecycle", name)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Scenario
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(s.Events) == 0 || s.LifeMS <= 0 {
		return nil, fmt.Errorf("%s: no events or no life_ms", path)
	}
	return &s, nil
}

// Labels binds the scenario's token labels (A, B, ...) to the access tokens a host gets: a label
// seen for the first time takes the token, which must be one no other label has.
type Labels map[string]string

// Check reports whether tok is the token of label, binding it when label is new.
func (l Labels) Check(label, tok string) error {
	if want, ok := l[label]; ok {
		if tok != want {
			return fmt.Errorf("got %s, want token %s (%s)", l.name(tok), label, short(want))
		}
		return nil
	}
	for other, t := range l {
		if t == tok {
			return fmt.Errorf("got token %s again, want a new token %s", other, label)
		}
	}
	l[label] = tok
	return nil
}

// name is a token's label, or its first characters when it has none.
func (l Labels) name(tok string) string {
	for label, t := range l {
		if t == tok {
			return "token " + label
		}
	}
	return "a new token " + short(tok)
}

func short(tok string) string {
	if len(tok) > 8 {
		return tok[:8] + "..."
	}
	return tok
}
