package core

import "testing"

// BenchmarkCodecNative is BenchmarkCodec/native of host/ here, for profiling the core alone.
func BenchmarkCodecNative(b *testing.B) {
	req := []byte(`{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"}`)
	dec := []byte(`{"request":{"provider":"nikohealth","client_id":"niko-client","client_secret":"niko-secret-1","domain":"acme"},"response":{"status":200,"headers":{"Content-Type":"application/json"},"body":"{\"access_token\":\"BE55CF536EC46D12F9FDBF1EFD831E086B121939B9806DF43F3A6043C67DB0AC\",\"expires_in\":1200,\"token_type\":\"Bearer\",\"scope\":\"external\"}"},"now_ms":1767225600000}`)
	m := new(Memo)
	b.ReportAllocs()
	for b.Loop() {
		Encode(m, req, nil)
		Decode(m, dec, nil)
	}
}
