//go:build race

package host

// raceEnabled: the tests run under the race detector, several times slower; the slowest make fewer
// calls, with the same assertions.
const raceEnabled = true
