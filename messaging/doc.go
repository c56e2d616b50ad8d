// Package messaging is the root of fleetprov's transports (NATS and HTTP). Its packages
// carry requests to core/ and results back; they hold no provisioning logic.
package messaging
