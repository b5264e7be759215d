package main

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// Every value keyhole stores starts with a version byte, so that a later
// layout can read what an earlier one wrote. Values written before version
// bytes existed are told apart by their first byte or length: JSON records
// began with '{'; log segments with the high byte of an entry's length,
// which is at most 5; usage rows were 32 bytes, last-used times 8. Readers
// take both; writers write the versioned form.
const (
	recordV1   = 0x01 // then the record as JSON: orgs, tokens, keys, limiter state, audit entries
	segmentV1  = 0x81 // then log entries, as below
	usageV1    = 0x01 // then the four status-class counts, u64 each
	lastUsedV1 = 0x01 // then Unix nanoseconds, i64
	tokenUseV1 = 0x01 // then last used, Unix nanoseconds i64, then the prefix learned on use, if any
	creditsV1  = 0x01 // then a key's spending: gen u64, remaining i64, refilled at i64
)

var errBadValue = errors.New("malformed stored value")

// encodeRecord is v as a stored record.
func encodeRecord(v any) ([]byte, error) {
	buf, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append([]byte{recordV1}, buf...), nil
}

// decodeRecord reads a stored record into v.
func decodeRecord(b []byte, v any) error {
	switch {
	case len(b) > 0 && b[0] == recordV1:
		b = b[1:]
	case len(b) == 0 || b[0] != '{':
		return errBadValue
	}
	return json.Unmarshal(b, v)
}

// segmentEntries is the entries of a stored log segment.
func segmentEntries(v []byte) []byte {
	if len(v) > 0 && v[0] == segmentV1 {
		return v[1:]
	}
	return v
}

// appendUsage adds c to the stored usage row old (nil for none).
func appendUsage(b, old []byte, c *usageCounts) []byte {
	sum := decodeUsage(old)
	b = append(b, usageV1)
	for i := range sum {
		b = binary.BigEndian.AppendUint64(b, sum[i]+c[i])
	}
	return b
}

// decodeUsage reads a stored usage row; a missing or damaged one is zero.
func decodeUsage(v []byte) (c usageCounts) {
	if len(v) == 33 && v[0] == usageV1 {
		v = v[1:]
	}
	if len(v) != 32 {
		return c
	}
	for i := range c {
		c[i] = binary.BigEndian.Uint64(v[i*8:])
	}
	return c
}

func encodeLastUsed(at int64) []byte {
	return binary.BigEndian.AppendUint64([]byte{lastUsedV1}, uint64(at))
}

func decodeLastUsed(v []byte) (int64, bool) {
	if len(v) == 9 && v[0] == lastUsedV1 {
		v = v[1:]
	}
	if len(v) != 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(v)), true
}

// tokenUse is what is written behind of an org admin token: when it was
// last used, and the prefix learned from it then, for a token issued
// before prefixes were kept ("" if known from its record).
type tokenUse struct {
	lastUsed int64
	prefix   string
}

func encodeTokenUse(u tokenUse) []byte {
	b := binary.BigEndian.AppendUint64([]byte{tokenUseV1}, uint64(u.lastUsed))
	return append(b, u.prefix...)
}

func decodeTokenUse(v []byte) (tokenUse, bool) {
	if len(v) < 9 || v[0] != tokenUseV1 {
		return tokenUse{}, false
	}
	return tokenUse{lastUsed: int64(binary.BigEndian.Uint64(v[1:])), prefix: string(v[9:])}, true
}

// A request-log entry is stored in binary, several to a segment value:
// encoding runs in the flush for every request, and JSON is three times the
// bytes and several times the work. The read path turns entries back into
// logEntry. One entry:
//
//	u16  length of what follows
//	i64  time, Unix nanoseconds
//	u32  latency, microseconds
//	u16  status
//	u8   env: 0 none, 1 test, 2 live; plus foldedFlag when a count ends it
//	[8]  key id (all zero: unidentified)
//	[8]  request id
//	u8   method length, then the method
//	     the path, to the end, or to the count
//	u32  with foldedFlag only: the refusals the entry stands for
const entryFixed = 8 + 4 + 2 + 1 + 8 + 8 + 1

// foldedFlag marks an entry that ends with a count (writeBehind.admitRefusal).
// Entries written before it existed never have the bit set.
const foldedFlag = 0x80

var errBadEntry = errors.New("malformed log segment")

func (e *pendingEntry) appendBinary(b []byte) []byte {
	method := e.method
	if len(method) > 255 {
		method = method[:255]
	}
	var env, countLen byte
	switch e.env {
	case envTest:
		env = 1
	case envLive:
		env = 2
	}
	if e.count > 0 {
		env, countLen = env|foldedFlag, 4
	}
	b = binary.BigEndian.AppendUint16(b, uint16(entryFixed+len(method)+len(e.path)+int(countLen)))
	b = binary.BigEndian.AppendUint64(b, uint64(e.at))
	b = binary.BigEndian.AppendUint32(b, uint32(min(e.latency.Microseconds(), 1<<32-1)))
	b = binary.BigEndian.AppendUint16(b, uint16(e.status))
	b = append(b, env)
	var keyID [8]byte
	if e.key != nil {
		keyID = e.key.id
	}
	b = append(b, keyID[:]...)
	b = append(b, requestIDBytes(e.reqID)...)
	b = append(b, byte(len(method)))
	b = append(b, method...)
	b = append(b, e.path...)
	if e.count > 0 {
		b = binary.BigEndian.AppendUint32(b, e.count)
	}
	return b
}

// requestIDBytes is the 8 bytes behind "req_<16 hex>".
func requestIDBytes(id string) []byte {
	var raw [8]byte
	if len(id) == 20 {
		hex.Decode(raw[:], []byte(id[4:]))
	}
	return raw[:]
}

// entryOffsets finds where each entry of a segment starts.
func entryOffsets(segment []byte) ([]int, error) {
	var offsets []int
	for i := 0; i < len(segment); {
		if len(segment)-i < 2 {
			return nil, errBadEntry
		}
		n := int(binary.BigEndian.Uint16(segment[i:]))
		if n < entryFixed || len(segment)-i-2 < n || int(segment[i+2+entryFixed-1])+countLen(segment[i+2+14]) > n-entryFixed {
			return nil, errBadEntry
		}
		offsets = append(offsets, i)
		i += 2 + n
	}
	return offsets, nil
}

// decodeEntry reads the entry at the start of b, which entryOffsets checked.
func decodeEntry(b []byte, seq uint64, orgID string) logEntry {
	n := int(binary.BigEndian.Uint16(b))
	b = b[2 : 2+n]
	at := int64(binary.BigEndian.Uint64(b))
	e := logEntry{
		ID:        strconv.FormatUint(seq, 10),
		Time:      formatTime(at),
		at:        at,
		LatencyMS: float64(binary.BigEndian.Uint32(b[8:])) / 1000,
		Status:    int(binary.BigEndian.Uint16(b[12:])),
		Env:       [3]string{"", envTest, envLive}[min(b[14]&^foldedFlag, 2)],
		RequestID: "req_" + hex.EncodeToString(b[23:31]),
	}
	if id := [8]byte(b[15:23]); id != ([8]byte{}) {
		e.KeyID = string(appendKeyID(nil, id))
		e.OrgID = orgID
	}
	m := int(b[31])
	end := len(b) - countLen(b[14])
	e.Method = string(b[32 : 32+m])
	e.Path = string(b[32+m : end])
	if end < len(b) {
		e.Count = binary.BigEndian.Uint32(b[end:])
	}
	return e
}

// countLen is the length of the count that ends an entry with env byte env.
func countLen(env byte) int {
	if env&foldedFlag != 0 {
		return 4
	}
	return 0
}

// orgOf is the org id an org's ring holds entries of: none for the
// server-wide log.
func orgOf(logName string) string {
	if logName == serverLog {
		return ""
	}
	return logName
}

// hotRow is what the in-memory index needs of a key. Version 1 rows,
// written before keys had names in the index and the options a PATCH sets,
// read with those empty (version 1); the server rewrites them as version 2
// once, at start (store.UpgradeKeyRows).
type hotRow struct {
	version   byte
	env       byte // 1: live
	flags     byte // rowDisabled
	hash      [32]byte
	expiresAt int64
	revokedAt int64
	id        []byte
	orgID     []byte
	prefix    []byte
	scopes    []byte // joined with ","
	limits    []byte // limitsSignature, "" for the server default
	name      []byte
	meta      []byte // the JSON object as answers write it, "" for none
	allowed   []byte // canonical CIDRs joined with ",", "" for any address
	credits   []byte // appendCreditSetting, "" for no usage limit
}

const (
	hotRowV1 = 1
	hotRowV2 = 2 // adds flags, name, meta, allowed IPs and credits

	rowDisabled = 1 << 0
)

func appendHotRow(b []byte, k *keyRecord) []byte {
	env := byte(0)
	if k.Env == envLive {
		env = 1
	}
	var flags byte
	if k.Disabled {
		flags |= rowDisabled
	}
	b = append(b, hotRowV2, env)
	b = append(b, k.Hash[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(k.ExpiresAt))
	b = binary.BigEndian.AppendUint64(b, uint64(k.RevokedAt))
	b = append(b, flags)
	limits := ""
	if k.RateLimits != nil {
		limits = limitsSignature(k.RateLimits)
	}
	var credits []byte
	if k.Credits != nil {
		credits = appendCreditSetting(nil, k.Credits)
	}
	for _, str := range []string{k.ID, k.OrgID, k.Prefix, strings.Join(k.Scopes, ","), limits,
		k.Name, string(k.Meta), strings.Join(k.AllowedIPs, ","), string(credits)} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(str)))
		b = append(b, str...)
	}
	return b
}

var errBadRow = errors.New("malformed key row")

func (r *hotRow) decode(b []byte) error {
	if len(b) < 50 || b[0] != hotRowV1 && b[0] != hotRowV2 {
		return errBadRow
	}
	*r = hotRow{version: b[0], env: b[1]}
	copy(r.hash[:], b[2:34])
	r.expiresAt = int64(binary.BigEndian.Uint64(b[34:]))
	r.revokedAt = int64(binary.BigEndian.Uint64(b[42:]))
	b = b[50:]
	// An array, not a slice that grows: a start decodes a million rows.
	fields := [...]*[]byte{&r.id, &r.orgID, &r.prefix, &r.scopes, &r.limits, &r.name, &r.meta, &r.allowed, &r.credits}
	n := 5
	if r.version == hotRowV2 {
		if len(b) < 1 {
			return errBadRow
		}
		r.flags, b, n = b[0], b[1:], len(fields)
	}
	for _, dst := range fields[:n] {
		if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
			return errBadRow
		}
		n := int(binary.BigEndian.Uint16(b))
		*dst, b = b[2:2+n], b[2+n:]
	}
	return nil
}

// A key's credit setting in its row: remaining i64, gen u64, set at i64,
// refill amount i64, interval u8 (0 none, 1 daily, 2 monthly), day u8.
const creditSettingLen = 8 + 8 + 8 + 8 + 1 + 1

func appendCreditSetting(b []byte, c *creditSetting) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(c.Remaining))
	b = binary.BigEndian.AppendUint64(b, c.Gen)
	b = binary.BigEndian.AppendUint64(b, uint64(c.SetAt))
	var amount int64
	var interval, day byte
	if c.Refill != nil {
		amount, day = c.Refill.Amount, byte(c.Refill.Day)
		switch c.Refill.Interval {
		case refillDaily:
			interval = 1
		case refillMonthly:
			interval = 2
		}
	}
	b = binary.BigEndian.AppendUint64(b, uint64(amount))
	return append(b, interval, day)
}

func decodeCreditSetting(b []byte) (creditSetting, bool) {
	if len(b) != creditSettingLen {
		return creditSetting{}, false
	}
	c := creditSetting{Remaining: int64(binary.BigEndian.Uint64(b)), Gen: binary.BigEndian.Uint64(b[8:]),
		SetAt: int64(binary.BigEndian.Uint64(b[16:]))}
	switch b[32] {
	case 1:
		c.Refill = &creditRefill{Amount: int64(binary.BigEndian.Uint64(b[24:])), Interval: refillDaily}
	case 2:
		c.Refill = &creditRefill{Amount: int64(binary.BigEndian.Uint64(b[24:])), Interval: refillMonthly, Day: int(b[33])}
	}
	return c, true
}

// A key's spending, written behind: gen (of the setting it counts from),
// remaining, and when remaining was last set or refilled.
type creditState struct {
	gen        uint64
	remaining  int64
	refilledAt int64
}

func encodeCreditState(st creditState) []byte {
	b := append(make([]byte, 0, 25), creditsV1)
	b = binary.BigEndian.AppendUint64(b, st.gen)
	b = binary.BigEndian.AppendUint64(b, uint64(st.remaining))
	return binary.BigEndian.AppendUint64(b, uint64(st.refilledAt))
}

func decodeCreditState(v []byte) (creditState, bool) {
	if len(v) != 25 || v[0] != creditsV1 {
		return creditState{}, false
	}
	return creditState{gen: binary.BigEndian.Uint64(v[1:]), remaining: int64(binary.BigEndian.Uint64(v[9:])),
		refilledAt: int64(binary.BigEndian.Uint64(v[17:]))}, true
}

// usageRowKey is a usage row's key: its prefix and the hour, u64 BE, so
// that one org's rows of one env are adjacent and in time order.
func usageRowKey(ix *keyIndex, k usageKey) []byte {
	return append(usageRowPrefix(ix.orgIDs.get(k.org), envName(k.live)), u64(uint64(k.hour))...)
}

// usageRowPrefix is what the keys of one org's usage rows of one env start with.
func usageRowPrefix(orgID, env string) []byte {
	return []byte(orgID + "/" + env + "/")
}

// keyUsageRowKey is a key's usage row's key: the hour first, u64 BE, so
// that pruning deletes from the start of the bucket, then org and key id.
func keyUsageRowKey(hour int64, orgID, keyID string) []byte {
	return append(u64(uint64(hour)), orgID+"/"+keyID...)
}
