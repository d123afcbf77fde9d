// Package race tells tests whether the race detector is on, so that a long single-goroutine loop can
// run fewer times under `go test -race`, where wazero's compiler and every host call into Go run
// 3-50x slower. A test that uses it still asserts the same things; `make unit` runs it again with
// its full count, without -race: the Makefile's FULL_COUNT_TESTS lists such tests, and
// TestFullCountRunsSomewhere fails when one is missing.
package race

// Iterations returns full, or underRace when the test binary was built with -race.
func Iterations(full, underRace int) int {
	if Enabled {
		return underRace
	}
	return full
}
