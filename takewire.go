package main

import (
	"encoding/binary"
	"errors"
	"math"
)

// The wire format of forwarded takes: a batch each way, in binary, since
// encoding/json was a quarter of the owner's CPU for them. Big-endian.
//
//	request: u16 count, then per take: u8 len, lookup; [8] key id;
//	         u8 allowed; i64 cost; i64 rev
//	answer:  u16 count, then per take: u8 flags (takeUnknown, takeAllowed,
//	         takeExceeded, takeHasCredits); unless unknown: u8 len, sig;
//	         u8 n, n × f64 tokens; i64 credits; i64 refill in
//
// Decoding checks every length and refuses trailing bytes, a count past
// maxBatch, unknown flags, more than maxWindows tokens, a token count that
// is not a finite number of at least 0, and a cost a key cannot spend.

const (
	takeUnknown = 1 << iota
	takeAllowed
	takeExceeded
	takeHasCredits
)

var errBadTakes = errors.New("a malformed batch of takes")

func appendTakeRequests(b []byte, reqs []takeRequest) ([]byte, error) {
	if len(reqs) > maxBatch {
		return nil, errBadTakes
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(reqs)))
	for _, t := range reqs {
		if len(t.Lookup) > math.MaxUint8 {
			return nil, errBadTakes
		}
		b = append(append(b, byte(len(t.Lookup))), t.Lookup...)
		b = append(b, t.Key[:]...)
		b = append(b, byte(boolInt(t.Allowed)))
		b = binary.BigEndian.AppendUint64(b, uint64(t.Cost))
		b = binary.BigEndian.AppendUint64(b, uint64(t.Rev))
	}
	return b, nil
}

func appendTakeAnswers(b []byte, answers []takeAnswer) ([]byte, error) {
	b = binary.BigEndian.AppendUint16(b, uint16(len(answers)))
	for _, a := range answers {
		b = append(b, byte(boolInt(a.Unknown)*takeUnknown|boolInt(a.Allowed)*takeAllowed|
			boolInt(a.Exceeded)*takeExceeded|boolInt(a.HasCredits)*takeHasCredits))
		if a.Unknown {
			continue
		}
		if len(a.Sig) > math.MaxUint8 || len(a.Tokens) > maxWindows {
			return nil, errBadTakes
		}
		b = append(append(b, byte(len(a.Sig))), a.Sig...)
		b = append(b, byte(len(a.Tokens)))
		for _, tok := range a.Tokens {
			b = binary.BigEndian.AppendUint64(b, math.Float64bits(tok))
		}
		b = binary.BigEndian.AppendUint64(b, uint64(a.Credits))
		b = binary.BigEndian.AppendUint64(b, uint64(a.RefillIn))
	}
	return b, nil
}

// wireReader reads the format above; a read past the end sets bad.
type wireReader struct {
	b   []byte
	bad bool
}

func (r *wireReader) bytes(n int) []byte {
	if r.bad || len(r.b) < n {
		r.bad = true
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *wireReader) u8() byte     { return r.bytes(1)[0] }
func (r *wireReader) u16() int     { return int(binary.BigEndian.Uint16(r.bytes(2))) }
func (r *wireReader) i64() int64   { return int64(binary.BigEndian.Uint64(r.bytes(8))) }
func (r *wireReader) f64() float64 { return math.Float64frombits(uint64(r.i64())) }
func (r *wireReader) str() string  { return string(r.bytes(int(r.u8()))) }
func (r *wireReader) done() bool   { return !r.bad && len(r.b) == 0 }

// count reads a batch's count, at most maxBatch.
func (r *wireReader) count() int {
	n := r.u16()
	r.bad = r.bad || n > maxBatch
	return n
}

func decodeTakeRequests(b []byte) ([]takeRequest, error) {
	r := &wireReader{b: b}
	n := r.count()
	reqs := make([]takeRequest, 0, min(n, maxBatch))
	for i := 0; i < n && !r.bad; i++ {
		var t takeRequest
		t.Lookup = r.str()
		t.Key = [8]byte(r.bytes(8))
		allowed := r.u8()
		t.Allowed = allowed == 1
		t.Cost, t.Rev = r.i64(), r.i64()
		r.bad = r.bad || allowed > 1 || t.Cost < 0 || t.Cost > maxCredits
		reqs = append(reqs, t)
	}
	if !r.done() {
		return nil, errBadTakes
	}
	return reqs, nil
}

func decodeTakeAnswers(b []byte) ([]takeAnswer, error) {
	r := &wireReader{b: b}
	n := r.count()
	answers := make([]takeAnswer, 0, min(n, maxBatch))
	for i := 0; i < n && !r.bad; i++ {
		f := r.u8()
		r.bad = r.bad || f >= 1<<4
		a := takeAnswer{Unknown: f&takeUnknown != 0, Allowed: f&takeAllowed != 0,
			Exceeded: f&takeExceeded != 0, HasCredits: f&takeHasCredits != 0}
		if !a.Unknown {
			a.Sig = r.str()
			windows := int(r.u8())
			r.bad = r.bad || windows > maxWindows
			for j := 0; j < windows && !r.bad; j++ {
				tok := r.f64()
				r.bad = r.bad || math.IsNaN(tok) || math.IsInf(tok, 0) || tok < 0
				a.Tokens = append(a.Tokens, tok)
			}
			a.Credits, a.RefillIn = r.i64(), r.i64()
		}
		answers = append(answers, a)
	}
	if !r.done() {
		return nil, errBadTakes
	}
	return answers, nil
}
