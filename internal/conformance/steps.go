package conformance

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Step is one call of a token_step vector after the first: want is the answer expected from the
// call before it (its opaque "state" is not compared), answer is what the import it named returned.
// Request and State, when set, replace what the driver would send (a state resumed with another
// request, a forged state).
type Step struct {
	Want    json.RawMessage `json:"want"`
	Answer  json.RawMessage `json:"answer,omitempty"`
	Request json.RawMessage `json:"request,omitempty"`
	State   *string         `json:"state,omitempty"`
}

// stepInput is token_step's input (abi/ABI.md): the request on every step, then the state and the
// last action's answer.
type stepInput struct {
	Request json.RawMessage `json:"request"`
	State   string          `json:"state,omitempty"`
	Answer  json.RawMessage `json:"answer,omitempty"`
	Op      string          `json:"op,omitempty"`
}

// Call runs one export of the plugin with input and returns its answer.
type Call func(export string, input []byte) ([]byte, error)

// Check runs v through call and reports how the plugin's answers differ from the vector's. A vector
// with steps is a token_step flow: each answer that names an action is checked, then the next call
// carries the request, the state given and the action's scripted answer; the last answer is v.Want.
func (v Vector) Check(call Call) error {
	got, err := call(v.Export, v.Input)
	if err != nil {
		return err
	}
	if len(v.Steps) > 0 {
		var in stepInput
		if err := json.Unmarshal(v.Input, &in); err != nil {
			return fmt.Errorf("input: %w", err)
		}
		for i, s := range v.Steps {
			state, rest, err := splitState(got)
			if err != nil {
				return fmt.Errorf("step %d: %w in %s", i, err, got)
			}
			if err := Match(s.Want, rest); err != nil {
				return fmt.Errorf("step %d: %w", i, err)
			}
			if s.State != nil {
				state = *s.State
			}
			next := stepInput{in.Request, state, s.Answer, in.Op}
			if s.Request != nil {
				next.Request = s.Request
			}
			b, _ := json.Marshal(next)
			if got, err = call(v.Export, b); err != nil {
				return err
			}
		}
	}
	if err := Match(v.Want, got); err != nil {
		return fmt.Errorf("%w\ngot %s", err, got)
	}
	return nil
}

// splitState takes the opaque state out of a token_step answer that names a next action.
func splitState(b []byte) (string, []byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return "", nil, err
	}
	var state string
	if err := json.Unmarshal(m["state"], &state); err != nil || state == "" {
		return "", nil, errors.New("no state beside the next action")
	}
	delete(m, "state")
	rest, _ := json.Marshal(m)
	return state, rest, nil
}

// Action is one import a token_step answer asks for.
type Action struct {
	Import string          `json:"import"`
	Input  json.RawMessage `json:"input"`
	// AfterOK (then actions): do it only if every action before it in then succeeded.
	AfterOK bool `json:"after_ok,omitempty"`
}

// StepAnswer is a token_step answer: the next action with its state, or a final answer (token,
// error, pending, or invalidate's {}) with the actions still to be done.
type StepAnswer struct {
	Next  *Action         `json:"next,omitempty"`
	State string          `json:"state,omitempty"`
	Then  []Action        `json:"then,omitempty"`
	Final json.RawMessage `json:"-"` // the answer without "then"
}

// ParseStep reads a token_step answer.
func ParseStep(b []byte) (*StepAnswer, error) {
	var a StepAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, fmt.Errorf("token_step answered invalid JSON: %w", err)
	}
	if a.Next == nil {
		a.Final = without(b, "then")
	}
	return &a, nil
}

// without returns the JSON object b less its member name, the others in their order and bytes.
func without(b []byte, name string) []byte {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return b
	}
	out := []byte{'{'}
	for dec.More() {
		k, err := dec.Token()
		var v json.RawMessage
		if err != nil || dec.Decode(&v) != nil {
			return b
		}
		if k == name {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		kb, _ := json.Marshal(k)
		out = append(append(append(out, kb...), ':'), v...)
	}
	return append(out, '}')
}

// Drive runs a whole token_step flow for request (op "" or "invalidate"): each action is given to
// do, whose answer goes back with the state; the final answer's "then" actions are done in order.
// It returns the final answer without "then": what the token (or invalidate) export answers.
func Drive(call Call, do func(a Action) []byte, request []byte, op string) ([]byte, error) {
	in := stepInput{Request: request, Op: op}
	for range 16 {
		b, _ := json.Marshal(in)
		out, err := call("token_step", b)
		if err != nil {
			return nil, err
		}
		a, err := ParseStep(out)
		if err != nil {
			return nil, err
		}
		if a.Next == nil {
			ok := true
			for _, t := range a.Then {
				if t.AfterOK && !ok {
					continue
				}
				var ans struct {
					Error json.RawMessage `json:"error"`
				}
				if json.Unmarshal(do(t), &ans) == nil && ans.Error != nil {
					ok = false
				}
			}
			return a.Final, nil
		}
		if a.State == "" {
			return nil, fmt.Errorf("token_step named an action without a state: %s", out)
		}
		in.State, in.Answer = a.State, nil
		if ans := do(*a.Next); len(ans) > 0 {
			in.Answer = ans
		}
	}
	return nil, errors.New("token_step did not end within 16 steps")
}

// ThroughSteps runs an encode or decode vector through the token_step flow, with a cache that
// misses: the flow's http_send must carry what encode answers, and its final answer must be what
// decode answers (plus "cached":false). It reports false for vectors it does not apply to
// (describe, decode inputs without a request and a response object).
func (v Vector) ThroughSteps(call Call) (bool, error) {
	var want map[string]json.RawMessage
	if err := json.Unmarshal(v.Want, &want); err != nil {
		return false, err
	}
	var request, response json.RawMessage
	switch v.Export {
	case "encode":
		if len(v.Input) == 0 || v.Input[0] != '{' {
			return false, nil // token_step's input holds the request: it is an object, or nothing runs
		}
		request = v.Input
	case "decode":
		var in struct {
			Request  map[string]json.RawMessage `json:"request"`
			Response json.RawMessage            `json:"response"`
			NowMS    json.RawMessage            `json:"now_ms"`
		}
		if json.Unmarshal(v.Input, &in) != nil || in.Request == nil || len(in.Response) == 0 || in.Response[0] != '{' {
			return false, nil
		}
		if in.NowMS != nil {
			in.Request["now_ms"] = in.NowMS
		}
		request, _ = json.Marshal(in.Request)
		response = in.Response
	default:
		return false, nil
	}
	var e struct {
		Kind, Message string
	}
	if json.Unmarshal(want["error"], &e) == nil && e.Kind == "signing_required" {
		return false, nil // token_step asks the host to sign instead (testdata/flow/sign_*.json)
	}
	sends := 0
	var sendErr error
	do := func(a Action) []byte {
		switch a.Import {
		case "cache_get":
			return []byte(`{"hit":false}`)
		case "cache_set":
			return []byte(`{"stored":true}`)
		case "sign":
			return DummySignature(a.Input)
		case "http_send":
			sends++
			if response != nil {
				return response
			}
			if err := Match(want["request"], a.Input); err != nil && sendErr == nil {
				sendErr = fmt.Errorf("http_send input is not what encode answers: %w", err)
			}
			return []byte(`{"status":200,"headers":{},"body":"{\"access_token\":\"step-token\",\"expires_in\":3600}"}`)
		}
		return []byte(`{}`)
	}
	final, err := Drive(call, do, request, "")
	if err != nil {
		return true, err
	}
	if sendErr != nil {
		return true, sendErr
	}
	if _, isErr := want["error"]; isErr && v.Export == "encode" {
		if sends != 0 {
			return true, errors.New("a request encode refuses was sent")
		}
		return true, Match(v.Want, final)
	}
	if sends != 1 {
		return true, fmt.Errorf("%d http_send calls, want 1", sends)
	}
	if v.Export == "encode" {
		var got map[string]json.RawMessage
		if json.Unmarshal(final, &got) != nil || got["token"] == nil {
			return true, fmt.Errorf("no token: %s", final)
		}
		return true, nil
	}
	if tok, ok := want["token"]; ok {
		want["cached"] = json.RawMessage("false")
		var t struct {
			ExpiresAtMS int64 `json:"expires_at_ms"`
			IssuedAtMS  int64 `json:"issued_at_ms"`
		}
		_ = json.Unmarshal(tok, &t)
		// The schedule the flow adds to a token (abi/ABI.md, "The schedule").
		life := max(0, t.ExpiresAtMS-t.IssuedAtMS)
		want["refresh_at_ms"], _ = json.Marshal(t.ExpiresAtMS - min(300000, life/3))
		want["stale_at_ms"], _ = json.Marshal(t.ExpiresAtMS - min(60000, life/4))
	}
	if json.Unmarshal(want["error"], &e) == nil && e.Kind == "invalid_request" && strings.HasPrefix(e.Message, "response") {
		// decode's caller sent a malformed response; in the flow it comes from the host's http_send
		want["error"], _ = json.Marshal(map[string]any{"kind": "transport", "message": "host http_send: " + e.Message, "retryable": true})
	}
	var werr map[string]any
	if json.Unmarshal(want["error"], &werr) == nil && werr["retryable"] == true && werr["kind"] != "rate_limited" {
		// The flow remembers a transient failure for a backoff, the first time 50 ms (abi/ABI.md).
		werr["retry_after_ms"] = 50
		want["error"], _ = json.Marshal(werr)
	}
	w, _ := json.Marshal(want)
	return true, Match(w, final)
}

// DummySignature answers a sign action with a signature of the right length for its algorithm (all
// zero bytes): for drivers that check the flow, not the provider.
func DummySignature(signInput []byte) []byte {
	var in struct {
		Alg string `json:"alg"`
	}
	_ = json.Unmarshal(signInput, &in)
	n := 256
	switch in.Alg {
	case "ES256":
		n = 64
	case "ES384":
		n = 96
	}
	b, _ := json.Marshal(map[string]string{"signature": base64.RawURLEncoding.EncodeToString(make([]byte, n))})
	return b
}
