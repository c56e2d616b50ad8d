package devicenats

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fleetprov/fleetprov/messaging/broker/brokertest"
	"github.com/fleetprov/fleetprov/messaging/subjects"
)

// fetchObject reads what a hub answers, and whoever writes the hub's object store may
// answer anything: every hostile answer ends the fetch with an error, quickly, and never
// writes more than the signed size.
func TestFetchObjectRefusesHostileAnswers(t *testing.T) {
	_, nc := brokertest.Start(t)
	payload := []byte("0123456789")
	type chunk struct {
		seq  string
		data []byte
	}
	good := func(i int) chunk { return chunk{strconv.Itoa(10 + i), payload[i*5 : i*5+5]} }
	for _, tc := range []struct {
		name   string
		info   string // "" drops the info request
		chunks func(i int) chunk
		want   string
	}{
		{"whole", `{"nuid":"N1","size":10}`, good, ""},
		{"deleted", `{"nuid":"N1","size":10,"deleted":true}`, good, "deleted"},
		{"other_size", `{"nuid":"N1","size":11}`, good, "the envelope says 10"},
		{"wildcard_nuid", `{"nuid":"a.>","size":10}`, good, "bad chunk id"},
		{"not_json", `{`, good, "reading object"},
		{"empty_chunks_forever", `{"nuid":"N1","size":10}`, func(i int) chunk { return chunk{strconv.Itoa(10 + i), nil} }, "empty chunk"},
		{"same_chunk_again", `{"nuid":"N1","size":10}`, func(int) chunk { return chunk{"10", payload[:5]} }, "chunk sequence"},
		{"no_sequence", `{"nuid":"N1","size":10}`, func(i int) chunk { return chunk{"", payload[:5]} }, "chunk sequence"},
		{"one_chunk", `{"nuid":"N1","size":10}`, func(int) chunk { return chunk{"10", payload} }, ""},
		{"past_size", `{"nuid":"N1","size":10}`, func(i int) chunk { return chunk{strconv.Itoa(10 + i), []byte("0123456")} }, "longer than 10"},
		{"info_dropped", "", good, "reading object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			sub, err := nc.Subscribe(subjects.ObjectDirectGet(subjects.Domain, "f")+".>", func(m *nats.Msg) {
				if tc.info != "" {
					m.Respond([]byte(tc.info))
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Unsubscribe()
			csub, err := nc.Subscribe(subjects.ObjectDirectGet(subjects.Domain, "f"), func(m *nats.Msg) {
				var req struct {
					Next string `json:"next_by_subj"`
				}
				json.Unmarshal(m.Data, &req)
				if req.Next != subjects.ObjectChunks("f", "N1") {
					t.Errorf("chunk request for %q", req.Next)
				}
				c := tc.chunks(int(calls.Add(1) - 1))
				a := nats.NewMsg(m.Reply)
				a.Data = c.data
				if c.seq != "" {
					a.Header.Set("Nats-Sequence", c.seq)
				}
				m.RespondMsg(a)
			})
			if err != nil {
				t.Fatal(err)
			}
			defer csub.Unsubscribe()
			nc.Flush()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var out bytes.Buffer
			err = fetchObject(ctx, nc, "f", "obj", 10, 1<<20, &out)
			switch {
			case tc.want == "":
				if err != nil || out.String() != string(payload) {
					t.Errorf("fetch = %v, %q; want the payload", err, out.String())
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Errorf("fetch = %v; want an error with %q", err, tc.want)
			case out.Len() > 10:
				t.Errorf("wrote %d bytes past the signed size", out.Len())
			}
			if n := calls.Load(); n > 3 {
				t.Errorf("%d chunk requests for a 10-byte object", n)
			}
		})
	}
	var out bytes.Buffer
	if err := fetchObject(context.Background(), nc, "f", "obj", 11, 10, &out); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("an object over the limit = %v", err)
	}
}
