//go:build race

package main

// raceEnabled: the race detector's sync.Pool drops what it is given at
// random, so allocation counts are only pinned without it.
const raceEnabled = true
