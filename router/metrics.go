package router

import "github.com/prometheus/client_golang/prometheus"

var (
	requestsDesc = prometheus.NewDesc("velo_router_requests_total", "Component calls routed, by component.", []string{"component"}, nil)
	errorsDesc   = prometheus.NewDesc("velo_router_errors_total", "Component calls answered with a 5xx status, by component.", []string{"component"}, nil)
	unroutedDesc = prometheus.NewDesc("velo_router_unrouted_total", "Calls under /fn/ or NAME.<domain> for a name that is no component (answered 404).", nil, nil)
)

// Collector exposes the router's counters to Prometheus.
func Collector(r *Router) prometheus.Collector { return collector{r} }

type collector struct{ r *Router }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- requestsDesc
	ch <- errorsDesc
	ch <- unroutedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for name, t := range c.r.Totals() {
		ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(t[0]), name)
		ch <- prometheus.MustNewConstMetric(errorsDesc, prometheus.CounterValue, float64(t[1]), name)
	}
	ch <- prometheus.MustNewConstMetric(unroutedDesc, prometheus.CounterValue, float64(c.r.unrouted.Load()))
}
