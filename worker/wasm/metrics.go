package wasm

import "github.com/prometheus/client_golang/prometheus"

var (
	outboundCallsDesc = prometheus.NewDesc("velo_wasm_outbound_calls_total",
		"Outbound HTTP calls (wasi_experimental_http) made by WASM components on this worker, by component and result (ok, refused, failed).",
		[]string{"component", "result"}, nil)
	outboundSecondsDesc = prometheus.NewDesc("velo_wasm_outbound_seconds_total",
		"Time WASM components spent in outbound HTTP calls on this worker, by component.",
		[]string{"component"}, nil)
)

// Collector exposes the runtime's outbound call counters to Prometheus.
func Collector(rt *Runtime) prometheus.Collector { return collector{rt} }

type collector struct{ rt *Runtime }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- outboundCallsDesc
	ch <- outboundSecondsDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for name, t := range c.rt.OutboundTotals() {
		ch <- prometheus.MustNewConstMetric(outboundCallsDesc, prometheus.CounterValue, float64(t.OK), name, "ok")
		ch <- prometheus.MustNewConstMetric(outboundCallsDesc, prometheus.CounterValue, float64(t.Refused), name, "refused")
		ch <- prometheus.MustNewConstMetric(outboundCallsDesc, prometheus.CounterValue, float64(t.Failed), name, "failed")
		ch <- prometheus.MustNewConstMetric(outboundSecondsDesc, prometheus.CounterValue, t.Seconds, name)
	}
}
