//! Prometheus metrics: per-route request counters and latency histograms recorded in the
//! `logging` phase (lock-free atomics in tables sized from the config), and everything
//! else read at scrape time from the counters the engine keeps anyway (listeners,
//! backends, groups). Labels only take values from the configuration (site, route,
//! upstream, server, listener) or small fixed sets (status class): never per-request values.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_core::listener::ListenerSettings;
use sluice_upstream::Upstream;

/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram: cumulative counts are computed at scrape time.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Counters of one route (or of requests no route matched).
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// Responses by status class: 1xx .. 5xx.
    by_class: [AtomicU64; 5],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    retries: AtomicU64,
    duration: Histogram,
    upstream_duration: Histogram,
}

/// Labels and counters of one route.
#[derive(Debug)]
struct RouteSeries {
    labels: String,
    /// Shared with the previous configuration's series of the same labels (a reload does
    /// not reset counters).
    metrics: Arc<RouteMetrics>,
}

/// All per-route metrics, indexed like the router: `[site][route]`.
#[derive(Debug)]
pub struct Metrics {
    routes: Vec<Vec<RouteSeries>>,
    unrouted: RouteSeries,
}

/// What identifies a route in the labels.
#[derive(Debug, Clone)]
pub struct RouteLabels {
    /// The site's first host pattern.
    pub site: String,
    /// The route's path pattern.
    pub route: String,
    /// The upstream group, or `-` for routes that answer themselves.
    pub upstream: String,
}

impl Metrics {
    /// Tables for `sites[site][route]`; series whose labels `previous` has keep counting
    /// from its counts.
    pub fn new(sites: Vec<Vec<RouteLabels>>, previous: Option<&Metrics>) -> Self {
        let carried = |labels: &str| {
            previous
                .and_then(|p| p.all().find(|s| s.labels == labels))
                .map_or_else(|| Arc::new(RouteMetrics::default()), |s| s.metrics.clone())
        };
        let series = |l: &RouteLabels| {
            let labels = format!(
                "site=\"{}\",route=\"{}\",upstream=\"{}\"",
                escape(&l.site),
                escape(&l.route),
                escape(&l.upstream)
            );
            RouteSeries { metrics: carried(&labels), labels }
        };
        let unrouted = "site=\"-\",route=\"-\",upstream=\"-\"".to_owned();
        Self {
            routes: sites.iter().map(|routes| routes.iter().map(series).collect()).collect(),
            unrouted: RouteSeries { metrics: carried(&unrouted), labels: unrouted },
        }
    }

    /// The counters of a matched route, or of unrouted requests.
    pub fn route(&self, matched: Option<(usize, usize)>) -> &RouteMetrics {
        matched
            .and_then(|(s, r)| self.routes.get(s).and_then(|routes| routes.get(r)))
            .map_or(&self.unrouted.metrics, |series| &series.metrics)
    }

    fn all(&self) -> impl Iterator<Item = &RouteSeries> {
        self.routes.iter().flatten().chain(std::iter::once(&self.unrouted))
    }
}

impl RouteMetrics {
    /// Records one finished request.
    pub fn record(
        &self,
        status: Option<u16>,
        total: Duration,
        upstream: Option<Duration>,
        bytes_in: u64,
        bytes_out: u64,
        retries: u32,
    ) {
        let class = usize::from(status.unwrap_or(500) / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        if retries > 0 {
            self.retries.fetch_add(u64::from(retries), Ordering::Relaxed);
        }
        self.duration.observe(total);
        if let Some(d) = upstream {
            self.upstream_duration.observe(d);
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders every family in the Prometheus text format (version 0.0.4).
pub fn render(
    metrics: &Metrics,
    listeners: &[Arc<ListenerSettings>],
    upstreams: &[Arc<Upstream>],
    reloads: (u64, u64),
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    family(&mut out, "sluice_requests_total", "counter", "Requests finished, by route and response status class.");
    for s in metrics.all() {
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            let n = s.metrics.by_class[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "sluice_requests_total{{{},status=\"{class}\"}} {n}", s.labels);
        }
    }
    family(
        &mut out,
        "sluice_request_duration_seconds",
        "histogram",
        "Time from the request head to the end of the response.",
    );
    for s in metrics.all() {
        s.metrics.duration.render(&mut out, "sluice_request_duration_seconds", &s.labels);
    }
    family(
        &mut out,
        "sluice_upstream_duration_seconds",
        "histogram",
        "Time from sending upstream to the response head.",
    );
    for s in metrics.all() {
        s.metrics.upstream_duration.render(&mut out, "sluice_upstream_duration_seconds", &s.labels);
    }
    family(&mut out, "sluice_request_bytes_total", "counter", "Request body bytes received from clients.");
    for s in metrics.all() {
        let _ =
            writeln!(out, "sluice_request_bytes_total{{{}}} {}", s.labels, s.metrics.bytes_in.load(Ordering::Relaxed));
    }
    family(&mut out, "sluice_response_bytes_total", "counter", "Response body bytes sent to clients.");
    for s in metrics.all() {
        let _ = writeln!(
            out,
            "sluice_response_bytes_total{{{}}} {}",
            s.labels,
            s.metrics.bytes_out.load(Ordering::Relaxed)
        );
    }
    family(&mut out, "sluice_retries_total", "counter", "Upstream attempts retried.");
    for s in metrics.all() {
        let _ = writeln!(out, "sluice_retries_total{{{}}} {}", s.labels, s.metrics.retries.load(Ordering::Relaxed));
    }

    let listener_family =
        |out: &mut String, name: &str, kind: &str, help: &str, value: &dyn Fn(&ListenerSettings) -> u64| {
            family(out, name, kind, help);
            for l in listeners {
                let _ = writeln!(out, "{name}{{listener=\"{}\"}} {}", escape(&l.name), value(l));
            }
        };
    listener_family(&mut out, "sluice_connections_open", "gauge", "Client connections open.", &|l| {
        l.stats.open.load(Ordering::Relaxed) as u64
    });
    listener_family(&mut out, "sluice_connections_accepted_total", "counter", "Client connections accepted.", &|l| {
        l.stats.accepted.load(Ordering::Relaxed)
    });
    listener_family(&mut out, "sluice_tls_handshakes_total", "counter", "TLS handshakes completed.", &|l| {
        l.stats.tls_handshakes.load(Ordering::Relaxed)
    });
    listener_family(&mut out, "sluice_tls_handshake_failures_total", "counter", "TLS handshakes that failed.", &|l| {
        l.stats.tls_failures.load(Ordering::Relaxed)
    });

    type ServerValue = dyn Fn(&sluice_upstream::Backend, u64) -> u64;
    let now = sluice_upstream::health::now_ms();
    let server_family = |out: &mut String, name: &str, kind: &str, help: &str, value: &ServerValue| {
        family(out, name, kind, help);
        for g in upstreams {
            for b in g.backends() {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\",server=\"{}\"}} {}",
                    escape(g.name()),
                    escape(b.key()),
                    value(&b, now)
                );
            }
        }
    };
    server_family(&mut out, "sluice_upstream_requests_total", "counter", "Requests sent to the server.", &|b, _| {
        b.stats().requests.load(Ordering::Relaxed)
    });
    server_family(
        &mut out,
        "sluice_upstream_connections_total",
        "counter",
        "Connections opened to the server.",
        &|b, _| b.stats().connects.load(Ordering::Relaxed),
    );
    server_family(
        &mut out,
        "sluice_upstream_reused_requests_total",
        "counter",
        "Requests sent on a pooled (reused) connection.",
        &|b, _| b.stats().reused.load(Ordering::Relaxed),
    );
    server_family(&mut out, "sluice_upstream_in_flight", "gauge", "Requests outstanding on the server.", &|b, _| {
        b.stats().in_flight()
    });
    server_family(&mut out, "sluice_upstream_idle_connections", "gauge", "Idle pooled connections.", &|b, _| {
        b.idle_connections() as u64
    });
    server_family(
        &mut out,
        "sluice_upstream_available",
        "gauge",
        "1 when the server may receive requests.",
        &|b, now| u64::from(b.health().available(now)),
    );
    server_family(
        &mut out,
        "sluice_upstream_ejections_total",
        "counter",
        "Ejections by passive health checking.",
        &|b, _| b.health().ejections_total(),
    );
    server_family(&mut out, "sluice_health_checks_total", "counter", "Active health checks run.", &|b, _| {
        b.health().checks_total()
    });
    server_family(
        &mut out,
        "sluice_health_check_failures_total",
        "counter",
        "Active health checks that failed.",
        &|b, _| b.health().check_failures_total(),
    );
    family(&mut out, "sluice_upstream_rejected_total", "counter", "Requests refused by a circuit breaker.");
    for g in upstreams {
        let _ = writeln!(
            out,
            "sluice_upstream_rejected_total{{upstream=\"{}\"}} {}",
            escape(g.name()),
            g.limits().rejected()
        );
    }
    family(
        &mut out,
        "sluice_config_reloads_total",
        "counter",
        "Configuration reloads (SIGHUP or POST /reload), by result.",
    );
    let _ = writeln!(out, "sluice_config_reloads_total{{result=\"success\"}} {}", reloads.0);
    let _ = writeln!(out, "sluice_config_reloads_total{{result=\"failure\"}} {}", reloads.1);
    out
}

/// Rate limits, the Redis client of cluster-wide ones, and connection refusals.
pub fn render_security(
    out: &mut String,
    router: &sluice_filters::router::Router,
    listeners: &[Arc<ListenerSettings>],
    redis: Option<&sluice_filters::ratelimit::redis::Redis>,
) {
    let mut limits: Vec<&Arc<sluice_filters::ratelimit::RateLimit>> = Vec::new();
    for site in router.sites() {
        for route in &site.routes {
            if let Some(l) = &route.rate_limit {
                if !limits.iter().any(|seen| Arc::ptr_eq(seen, l)) {
                    limits.push(l);
                }
            }
        }
    }
    family(out, "sluice_ratelimit_requests_total", "counter", "Requests checked by a rate limit, by outcome.");
    for l in &limits {
        for (i, outcome) in ["allowed", "delayed", "rejected"].iter().enumerate() {
            let n = l.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sluice_ratelimit_requests_total{{limit=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(&l.name)
            );
        }
    }
    family(out, "sluice_ratelimit_keys", "gauge", "Keys a rate limit remembers now.");
    for l in &limits {
        let _ = writeln!(out, "sluice_ratelimit_keys{{limit=\"{}\"}} {}", escape(&l.name), l.keys());
    }
    let clusters: Vec<_> = limits.iter().filter_map(|l| l.cluster().map(|c| (&l.name, c))).collect();
    if !clusters.is_empty() {
        family(out, "sluice_ratelimit_redis_leases_total", "counter", "Leases of request slots asked of Redis.");
        for (name, c) in &clusters {
            let n = c.stats.leases.load(Ordering::Relaxed);
            let _ = writeln!(out, "sluice_ratelimit_redis_leases_total{{limit=\"{}\"}} {n}", escape(name));
        }
        family(
            out,
            "sluice_ratelimit_redis_fallbacks_total",
            "counter",
            "Requests decided by on-redis-error because Redis could not answer.",
        );
        for (name, c) in &clusters {
            let n = c.stats.fallbacks.load(Ordering::Relaxed);
            let _ = writeln!(out, "sluice_ratelimit_redis_fallbacks_total{{limit=\"{}\"}} {n}", escape(name));
        }
    }
    if let Some(r) = redis {
        family(out, "sluice_redis_up", "gauge", "1 while the connection to Redis is up.");
        let _ = writeln!(out, "sluice_redis_up {}", u8::from(r.is_up()));
        family(out, "sluice_redis_commands_total", "counter", "Redis commands, by result.");
        let _ = writeln!(out, "sluice_redis_commands_total{{result=\"ok\"}} {}", r.stats.calls.load(Ordering::Relaxed));
        let _ =
            writeln!(out, "sluice_redis_commands_total{{result=\"error\"}} {}", r.stats.errors.load(Ordering::Relaxed));
        family(
            out,
            "sluice_redis_writes_total",
            "counter",
            "Socket writes to Redis (each carries every queued command).",
        );
        let _ = writeln!(out, "sluice_redis_writes_total {}", r.stats.writes.load(Ordering::Relaxed));
    }
    family(
        out,
        "sluice_connections_refused_total",
        "counter",
        "Client connections refused by a connection limit, by reason.",
    );
    for l in listeners {
        let by = &l.stats.by_address;
        for (reason, n) in [
            ("per_ip", by.refused_open.load(Ordering::Relaxed)),
            ("rate_per_ip", by.refused_rate.load(Ordering::Relaxed)),
            ("proxy_protocol", l.stats.proxy_protocol_failures.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(
                out,
                "sluice_connections_refused_total{{listener=\"{}\",reason=\"{reason}\"}} {n}",
                escape(&l.name)
            );
        }
    }
}

/// The OTLP exporter's span counts (only when `server.tracing` is set).
pub fn render_spans(out: &mut String, exported: u64, failed: u64, dropped: u64) {
    family(out, "sluice_otlp_spans_total", "counter", "Spans given to the OTLP exporter, by outcome.");
    for (outcome, n) in [("exported", exported), ("failed", failed), ("dropped", dropped)] {
        let _ = writeln!(out, "sluice_otlp_spans_total{{outcome=\"{outcome}\"}} {n}");
    }
}

/// The HTTP cache's counters, per tier (only when something caches).
pub fn render_cache(out: &mut String, store: &sluice_cache::Store) {
    let mut tiers = vec![("memory", store.memory().stats(), store.memory().bytes(), store.memory().len())];
    if let Some(disk) = store.disk() {
        tiers.push(("disk", disk.stats(), disk.bytes(), disk.len()));
    }
    family(out, "sluice_cache_lookups_total", "counter", "Cache lookups, by tier and result.");
    for (tier, s, _, _) in &tiers {
        let _ = writeln!(out, "sluice_cache_lookups_total{{tier=\"{tier}\",result=\"hit\"}} {}", s.hits);
        let _ = writeln!(out, "sluice_cache_lookups_total{{tier=\"{tier}\",result=\"miss\"}} {}", s.misses);
    }
    family(out, "sluice_cache_inserts_total", "counter", "Entries stored, by tier.");
    for (tier, s, _, _) in &tiers {
        let _ = writeln!(out, "sluice_cache_inserts_total{{tier=\"{tier}\"}} {}", s.inserts);
    }
    family(out, "sluice_cache_evictions_total", "counter", "Entries evicted to stay within the budget, by tier.");
    for (tier, s, _, _) in &tiers {
        let _ = writeln!(out, "sluice_cache_evictions_total{{tier=\"{tier}\"}} {}", s.evictions);
    }
    family(out, "sluice_cache_rejected_total", "counter", "Entries refused for their size, by tier.");
    for (tier, s, _, _) in &tiers {
        let _ = writeln!(out, "sluice_cache_rejected_total{{tier=\"{tier}\"}} {}", s.rejected);
    }
    family(out, "sluice_cache_bytes", "gauge", "Bytes stored, by tier.");
    for (tier, _, bytes, _) in &tiers {
        let _ = writeln!(out, "sluice_cache_bytes{{tier=\"{tier}\"}} {bytes}");
    }
    family(out, "sluice_cache_entries", "gauge", "Entries stored, by tier.");
    for (tier, _, _, len) in &tiers {
        let _ = writeln!(out, "sluice_cache_entries{{tier=\"{tier}\"}} {len}");
    }
}
