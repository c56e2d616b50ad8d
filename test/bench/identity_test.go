package bench

import (
	"encoding/json"
	"testing"

	"github.com/fleetprov/fleetprov/core/auth"
	"github.com/fleetprov/fleetprov/core/config/configtest"
	"github.com/fleetprov/fleetprov/core/record"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

// deviceMessages are a typical reply and job event as a device sends them.
func deviceMessages() (reply, event []byte) {
	reply, _ = json.Marshal(wire.Reply{Accepted: true, JobID: "01a20131-aaaa-7bbb-8ccc-dddddddddddd", Device: "gw-0042", Fleet: "prod",
		Request: "01a20131-aaaa-7bbb-8ccc-dddddddddddd"})
	event, _ = json.Marshal(wire.EventMsg{JobID: "01a20131-aaaa-7bbb-8ccc-dddddddddddd", Device: "gw-0042", Fleet: "prod", Seq: 7,
		Event: &record.Event{Step: "service-deploy", ElapsedSeconds: 0.412, Service: "web.service", Mode: "rootful", Status: "restarted"}})
	return reply, event
}

// BenchmarkDeviceSignature is what the device identity costs per message: the device
// signs (ed25519 SSHSIG), the publisher verifies; against encoding the message alone.
func BenchmarkDeviceSignature(b *testing.B) {
	key, _ := configtest.NewKey(b)
	reply, event := deviceMessages()
	for _, m := range []struct {
		name string
		body []byte
	}{{"reply", reply}, {"event", event}} {
		sig, _ := auth.Sign(m.body, key, auth.NamespaceDevice)
		b.Run(m.name+"/encode_only", func(b *testing.B) {
			for b.Loop() {
				var r wire.Reply
				json.Unmarshal(m.body, &r)
				json.Marshal(r)
			}
		})
		b.Run(m.name+"/sign", func(b *testing.B) {
			for b.Loop() {
				if _, err := auth.Sign(m.body, key, auth.NamespaceDevice); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(m.name+"/verify", func(b *testing.B) {
			for b.Loop() {
				if _, err := auth.VerifySelf(m.body, sig, auth.NamespaceDevice); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
