package events

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	queuedDesc  = prometheus.NewDesc("velo_events_queued", "Queued calls waiting to run (new, or failed and due for a retry), per component queue.", []string{"queue"}, nil)
	runningDesc = prometheus.NewDesc("velo_events_running", "Queued calls running now, per component queue.", []string{"queue"}, nil)
	deadDesc    = prometheus.NewDesc("velo_events_dead", "Queued calls out of attempts (dead letters), per component queue.", []string{"queue"}, nil)
)

// Collector exports the queues' depths for /metrics. A queue is named as
// its component (store.EventQueue: a digest for names River refuses).
func Collector(e *Engine) prometheus.Collector { return collector{e} }

type collector struct{ e *Engine }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queuedDesc
	ch <- runningDesc
	ch <- deadDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	all, err := c.e.st.AllEventCounts(ctx)
	if err != nil {
		c.e.log.Warn("event counts for /metrics", "err", err)
		return
	}
	for q, n := range all {
		if q == controlQueue {
			continue
		}
		ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(n.Queued), q)
		ch <- prometheus.MustNewConstMetric(runningDesc, prometheus.GaugeValue, float64(n.Running), q)
		ch <- prometheus.MustNewConstMetric(deadDesc, prometheus.GaugeValue, float64(n.Dead), q)
	}
}
