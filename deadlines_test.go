package main

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// watchedPair is a watched server connection on loopback and the client's
// end of it.
func watchedPair(t testing.TB, tick time.Duration) (server *watchedConn, client net.Conn, w *deadlineWatch) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w = newDeadlineWatch()
	ln := w.listen(raw, tick)
	t.Cleanup(func() { ln.Close() })
	if client, err = net.Dial("tcp", raw.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	hang := time.AfterFunc(10*time.Second, func() { client.Close() }) // a read no deadline ends gets EOF
	t.Cleanup(func() { hang.Stop() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*watchedConn), client, w
}

// readFor reads one byte from c and says how long the read took and what
// it returned.
func readFor(c net.Conn) (time.Duration, error) {
	start := time.Now()
	_, err := c.Read(make([]byte, 1))
	return time.Since(start), err
}

// TestWatchedDeadlines: a read deadline kept by the watch fails a blocked
// read as the connection's own would, never before it is due and at most
// a tick after; one lifted in time does not fire, one that fired is lifted
// by the next, and one in the past wakes the reader at once.
func TestWatchedDeadlines(t *testing.T) {
	t.Parallel()
	const tick = 20 * time.Millisecond
	const due = 150 * time.Millisecond
	slack := tick + 200*time.Millisecond // a busy test machine

	t.Run("fires when due", func(t *testing.T) {
		t.Parallel()
		c, _, _ := watchedPair(t, tick)
		c.SetReadDeadline(time.Now().Add(due))
		took, err := readFor(c)
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read past its deadline = %v; want os.ErrDeadlineExceeded", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("%v is not a net.Error timeout, which net/http looks for", err)
		}
		if took < due || took > due+slack {
			t.Fatalf("the deadline fired after %v; want between %v and %v", took, due, due+slack)
		}
	})
	t.Run("lifted in time", func(t *testing.T) {
		t.Parallel()
		c, client, _ := watchedPair(t, tick)
		c.SetReadDeadline(time.Now().Add(due / 3))
		c.SetReadDeadline(time.Time{})
		time.AfterFunc(2*due, func() { client.Write([]byte("x")) })
		if _, err := readFor(c); err != nil {
			t.Fatalf("read after a lifted deadline = %v; want the byte sent later", err)
		}
		c.SetReadDeadline(time.Now().Add(due / 3))
		c.SetReadDeadline(time.Now().Add(time.Hour)) // moved, as net/http moves it between requests
		time.AfterFunc(2*due, func() { client.Write([]byte("x")) })
		if _, err := readFor(c); err != nil {
			t.Fatalf("read after a moved deadline = %v; want the byte sent later", err)
		}
	})
	t.Run("fired, then lifted", func(t *testing.T) {
		t.Parallel()
		c, client, _ := watchedPair(t, tick)
		c.SetReadDeadline(time.Now().Add(due / 3))
		if _, err := readFor(c); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read = %v; want the deadline", err)
		}
		c.SetReadDeadline(time.Time{})
		client.Write([]byte("x"))
		if _, err := readFor(c); err != nil {
			t.Fatalf("read after the fired deadline was lifted = %v", err)
		}
	})
	t.Run("moved often, never early", func(t *testing.T) {
		t.Parallel()
		c, client, _ := watchedPair(t, time.Millisecond) // the watch looks as often as it can
		stop := time.Now().Add(300 * time.Millisecond)
		go func() {
			for time.Now().Before(stop) { // always a deadline ahead, or none: none may fire
				c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				c.SetReadDeadline(time.Time{})
				c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				time.Sleep(time.Millisecond)
			}
			c.SetReadDeadline(time.Time{})
			client.Write([]byte("x"))
		}()
		if _, err := readFor(c); err != nil {
			t.Fatalf("a read whose deadline was always ahead ended with %v", err)
		}
	})
	t.Run("a stale look arms nothing", func(t *testing.T) {
		t.Parallel()
		c, client, _ := watchedPair(t, time.Hour) // the test plays the watcher
		c.SetReadDeadline(time.Now().Add(due / 3))
		time.Sleep(due / 2)
		looked := c.readBy.Load() // passed, as the watcher sees it
		c.SetReadDeadline(time.Now().Add(time.Hour))
		c.expire(looked) // too late: the deadline moved since the look
		client.Write([]byte("x"))
		if _, err := readFor(c); err != nil {
			t.Fatalf("a read after the watcher acted on a deadline since moved = %v", err)
		}
	})
	t.Run("in the past", func(t *testing.T) {
		t.Parallel()
		c, _, _ := watchedPair(t, time.Hour) // the watch never looks: the past goes straight through
		time.AfterFunc(due, func() { c.SetReadDeadline(time.Unix(1, 0)) })
		took, err := readFor(c)
		if !errors.Is(err, os.ErrDeadlineExceeded) || took > due+slack {
			t.Fatalf("a past deadline set %v into a read ended it after %v with %v; want at once", due, took, err)
		}
	})
	t.Run("closed connections leave the watch", func(t *testing.T) {
		t.Parallel()
		c, _, w := watchedPair(t, tick)
		if w.open() != 1 {
			t.Fatalf("open = %d; want 1", w.open())
		}
		c.Close()
		c.Close()
		if w.open() != 0 {
			t.Fatalf("open after close = %d; want 0", w.open())
		}
	})
}

// TestIdleConnectionsAreClosed: a keep-alive connection that sends nothing
// after its answer is closed after IdleTimeout, and keyhole_connections_open
// counts it while it is open.
func TestIdleConnectionsAreClosed(t *testing.T) {
	t.Parallel()
	te := newTestEnv(t, func(c *config) { c.idleTimeout = 300 * time.Millisecond })
	c, _ := serveTestEnv(t, te)
	conn := c.dial()
	start := time.Now()
	io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
	idle := make(chan answer, 1)
	go func() { idle <- readAnswer(conn) }()
	time.Sleep(100 * time.Millisecond)
	if m := c.do("GET", "/metrics", ""); !strings.Contains(string(m.body), "\nkeyhole_connections_open 2\n") {
		t.Fatalf("metrics while one connection idles and one asks: want keyhole_connections_open 2 in\n%s", m.body)
	}
	select {
	case a := <-idle:
		if a.status != 200 || !a.closed {
			t.Fatalf("idle connection got %d, closed %v (%v); want 200, then closed", a.status, a.closed, a.err)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Fatalf("closed after %v, before the idle timeout", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an idle connection was still open after 10s")
	}
}

// BenchmarkReadDeadlines: the three moves of a read deadline net/http
// makes for each request on a keep-alive connection with IdleTimeout and
// ReadHeaderTimeout set, on a plain connection and on a watched one.
func BenchmarkReadDeadlines(b *testing.B) {
	moves := func(b *testing.B, c net.Conn) {
		for b.Loop() {
			c.SetReadDeadline(time.Now().Add(defaultIdleTimeout))
			c.SetReadDeadline(time.Now().Add(defaultReadHeaderTimeout))
			c.SetReadDeadline(time.Time{})
		}
	}
	b.Run("net.TCPConn", func(b *testing.B) {
		c, _, _ := watchedPair(b, deadlineTick)
		moves(b, c.TCPConn)
	})
	b.Run("watched", func(b *testing.B) {
		c, _, _ := watchedPair(b, deadlineTick)
		moves(b, c)
	})
}
