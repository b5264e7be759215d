package main

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Read deadlines kept as bookkeeping, enforced by one watcher.
//
// With ReadHeaderTimeout and IdleTimeout set, net/http moves a connection's
// read deadline three times a request: to the idle timeout after an answer,
// to the header timeout when the next request's first bytes arrive, and
// clear once its headers are read. Each move reads the clock twice and
// moves a runtime timer under its lock. In a profile of whoami under wrk
// that was about 2% of the process's CPU: more than any one step of
// keyhole's own (BENCHMARKS.md, issue 14). Here a move only stores the
// deadline on the connection; a watcher goroutine looks at every
// connection each deadlineTick and sets the real deadline of those whose
// stored one has passed, which fails their pending read as net/http
// expects. A deadline so fires up to one tick late; none fires early.
//
// Deadlines in the past (net/http's way to wake a blocked read at once)
// and write deadlines go to the connection straight away. Times are kept
// as monotonic offsets from the watch's start, as the runtime's deadlines
// are: a step of the wall clock moves none of them.

// deadlineTick is how late a read deadline may fire: a small part of the
// shortest timeout keyhole sets (10 s for headers, by default).
const deadlineTick = 100 * time.Millisecond

// deadlineListener tracks the connections it accepts in its watch.
type deadlineListener struct {
	net.Listener
	watch *deadlineWatch
}

func newDeadlineWatch() *deadlineWatch {
	return &deadlineWatch{conns: map[*watchedConn]struct{}{}, base: time.Now()}
}

// listen wraps ln so that its connections' read deadlines are enforced by
// the watch, which looks every tick until ln is closed and its last
// connection too. A watch serves one listener.
func (w *deadlineWatch) listen(ln net.Listener, tick time.Duration) net.Listener {
	w.now.Store(int64(time.Since(w.base)))
	go w.run(tick)
	return &deadlineListener{Listener: ln, watch: w}
}

func (l *deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok { // keyhole listens on TCP; anything else keeps its own deadlines
		return c, nil
	}
	wc := &watchedConn{TCPConn: tcp, watch: l.watch}
	l.watch.add(wc)
	return wc, nil
}

func (l *deadlineListener) Close() error {
	l.watch.closeListener()
	return l.Listener.Close()
}

type deadlineWatch struct {
	base time.Time    // times are offsets from it, by its monotonic clock reading
	now  atomic.Int64 // the time of the last look: "in the past" is before it

	mu             sync.Mutex
	conns          map[*watchedConn]struct{}
	listenerClosed bool
}

// open is how many accepted connections are open (keyhole_connections_open).
func (w *deadlineWatch) open() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conns)
}

func (w *deadlineWatch) add(c *watchedConn) {
	w.mu.Lock()
	w.conns[c] = struct{}{}
	w.mu.Unlock()
}

func (w *deadlineWatch) remove(c *watchedConn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

func (w *deadlineWatch) closeListener() {
	w.mu.Lock()
	w.listenerClosed = true
	w.mu.Unlock()
}

// run looks every tick until the listener and all its connections are
// closed: a draining server's connections keep their deadlines.
func (w *deadlineWatch) run(tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for range t.C {
		now := int64(time.Since(w.base))
		w.now.Store(now)
		w.mu.Lock()
		for c := range w.conns {
			if by := c.readBy.Load(); by > 0 && by <= now {
				c.expire(by)
			}
		}
		done := w.listenerClosed && len(w.conns) == 0
		w.mu.Unlock()
		if done {
			return
		}
	}
}

// watchedConn is a server connection whose read deadline is stored, not
// armed, until the watcher sees it pass. It embeds *net.TCPConn so that
// net/http still finds CloseWrite (a clean close after an error answer)
// and ReadFrom.
type watchedConn struct {
	*net.TCPConn
	watch *deadlineWatch
	// readBy is the stored read deadline (an offset from the watch's base,
	// at least 1), 0 for none, or armedDeadline while the connection's own
	// deadline is set (to a past time). Moving a deadline that was not
	// armed is one atomic swap.
	readBy    atomic.Int64
	mu        sync.Mutex // held while the connection's own deadline is set or lifted
	closeOnce sync.Once
}

const armedDeadline = -1

// longAgo is the deadline that fails a connection's pending read at once.
var longAgo = time.Unix(1, 0)

func (c *watchedConn) SetReadDeadline(t time.Time) error {
	var by int64 // none
	if !t.IsZero() {
		// t.Sub reads no clock: net/http's deadlines are time.Now plus a
		// timeout, and carry the monotonic reading both are taken by.
		if by = int64(t.Sub(c.watch.base)); by <= c.watch.now.Load() { // already past: wake the reader now
			c.mu.Lock()
			defer c.mu.Unlock()
			c.readBy.Store(armedDeadline)
			return c.TCPConn.SetReadDeadline(t)
		}
	}
	if c.readBy.Swap(by) != armedDeadline {
		return nil
	}
	// A deadline that fired is lifted by a later one, unless another has
	// fired since the swap.
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readBy.Load() == armedDeadline {
		return nil
	}
	return c.TCPConn.SetReadDeadline(time.Time{})
}

func (c *watchedConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.TCPConn.SetWriteDeadline(t)
}

// expire arms the connection's own deadline if the stored one, by, is
// still the one set: a SetReadDeadline since the watcher's look wins.
func (c *watchedConn) expire(by int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readBy.CompareAndSwap(by, armedDeadline) {
		c.TCPConn.SetReadDeadline(longAgo)
	}
}

func (c *watchedConn) Close() error {
	c.closeOnce.Do(func() { c.watch.remove(c) })
	return c.TCPConn.Close()
}
