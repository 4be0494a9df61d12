//! Server metrics, rendered in Prometheus' text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// A cumulative histogram with fixed bucket bounds (seconds).
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.counts) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    /// The series of one model (`label`: its `model_name="…"` pair), without HELP and TYPE.
    fn render(&self, out: &mut String, name: &str, label: &str) {
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{label},le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{label}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{label}}} {}", self.count);
    }
}

const TTFT_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const TPOT_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

/// What `/metrics` reports of one model, labelled with its name. Gauges are set by the engine thread after each step; counters
/// only grow.
#[derive(Debug)]
pub struct Metrics {
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    pub kv_blocks_used: AtomicU64,
    pub kv_blocks_total: AtomicU64,
    /// Tokens per KV block (set with the pool, before the model is published).
    pub kv_block_size: AtomicU64,
    /// The sliding-window layers' own pool (0 for models without such layers).
    pub kv_window_blocks_used: AtomicU64,
    pub kv_window_blocks_total: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub prefix_cache_hit_tokens: AtomicU64,
    /// Of those, the tokens read back from the disk tier.
    pub prefix_cache_disk_hit_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub requests_finished: AtomicU64,
    pub requests_aborted: AtomicU64,
    pub requests_failed: AtomicU64,
    pub requests_rejected: AtomicU64,
    /// Speculative decoding: guessed tokens verified, accepted, and verifications.
    pub spec_draft_tokens: AtomicU64,
    pub spec_accepted_tokens: AtomicU64,
    pub spec_verifications: AtomicU64,
    /// The disk tier's counters, when there is one.
    pub disk: Mutex<Option<frugal_diskcache::Stats>>,
    ttft: Mutex<Histogram>,
    tpot: Mutex<Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            kv_blocks_used: AtomicU64::new(0),
            kv_blocks_total: AtomicU64::new(0),
            kv_block_size: AtomicU64::new(0),
            kv_window_blocks_used: AtomicU64::new(0),
            kv_window_blocks_total: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            prefix_cache_hit_tokens: AtomicU64::new(0),
            prefix_cache_disk_hit_tokens: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            requests_finished: AtomicU64::new(0),
            requests_aborted: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            spec_draft_tokens: AtomicU64::new(0),
            spec_accepted_tokens: AtomicU64::new(0),
            spec_verifications: AtomicU64::new(0),
            disk: Mutex::new(None),
            ttft: Mutex::new(Histogram::new(TTFT_BOUNDS)),
            tpot: Mutex::new(Histogram::new(TPOT_BOUNDS)),
        }
    }
}

impl Metrics {
    pub fn observe_ttft(&self, seconds: f64) {
        lock(&self.ttft).observe(seconds);
    }

    pub fn observe_tpot(&self, seconds: f64) {
        lock(&self.tpot).observe(seconds);
    }

    /// The gauges: (name, help, value).
    fn gauges(&self) -> [(&'static str, &'static str, &AtomicU64); 6] {
        [
            (
                "frugal_requests_running",
                "Sequences in the running batch.",
                &self.running,
            ),
            (
                "frugal_requests_waiting",
                "Sequences waiting to be admitted.",
                &self.waiting,
            ),
            (
                "frugal_kv_blocks_used",
                "KV-cache blocks referenced by sequences.",
                &self.kv_blocks_used,
            ),
            (
                "frugal_kv_blocks_total",
                "KV-cache blocks in the pool.",
                &self.kv_blocks_total,
            ),
            (
                "frugal_kv_window_blocks_used",
                "KV-cache blocks of the sliding-window layers' pool referenced by sequences.",
                &self.kv_window_blocks_used,
            ),
            (
                "frugal_kv_window_blocks_total",
                "KV-cache blocks in the sliding-window layers' pool (0 without such layers).",
                &self.kv_window_blocks_total,
            ),
        ]
    }

    /// The counters: (name, help, value).
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 12] {
        [
            (
                "frugal_prompt_tokens_total",
                "Prompt tokens of admitted requests.",
                &self.prompt_tokens,
            ),
            (
                "frugal_generation_tokens_total",
                "Tokens generated.",
                &self.generation_tokens,
            ),
            (
                "frugal_prefix_cache_hit_tokens_total",
                "Prompt tokens served from the prefix cache (RAM or disk) instead of recomputed.",
                &self.prefix_cache_hit_tokens,
            ),
            (
                "frugal_prefix_cache_disk_hit_tokens_total",
                "Prompt tokens of those read back from the prefix cache's disk tier.",
                &self.prefix_cache_disk_hit_tokens,
            ),
            (
                "frugal_preemptions_total",
                "Sequences preempted (blocks released, recomputed later).",
                &self.preemptions,
            ),
            (
                "frugal_requests_finished_total",
                "Sequences that finished (stop or length).",
                &self.requests_finished,
            ),
            (
                "frugal_requests_aborted_total",
                "Sequences cancelled because their client went away.",
                &self.requests_aborted,
            ),
            (
                "frugal_requests_failed_total",
                "Sequences that failed with an internal error.",
                &self.requests_failed,
            ),
            (
                "frugal_requests_rejected_total",
                "Requests rejected by the scheduler (queue full).",
                &self.requests_rejected,
            ),
            (
                "frugal_spec_draft_tokens_total",
                "Speculative decoding: guessed tokens verified.",
                &self.spec_draft_tokens,
            ),
            (
                "frugal_spec_accepted_tokens_total",
                "Speculative decoding: guessed tokens accepted.",
                &self.spec_accepted_tokens,
            ),
            (
                "frugal_spec_verifications_total",
                "Speculative decoding: steps in which a sequence verified guesses.",
                &self.spec_verifications,
            ),
        ]
    }

    /// The fraction of the full-attention pool that sequences reference, as vLLM's
    /// `kv_cache_usage_perc` counts it: cached blocks no sequence holds are free.
    pub fn kv_cache_usage(&self) -> f64 {
        match self.kv_blocks_total.load(Relaxed) {
            0 => 0.0,
            total => self.kv_blocks_used.load(Relaxed) as f64 / total as f64,
        }
    }

    fn mean_accepted(&self) -> f64 {
        match self.spec_verifications.load(Relaxed) {
            0 => 0.0,
            n => self.spec_accepted_tokens.load(Relaxed) as f64 / n as f64,
        }
    }

    /// Every gauge and counter with its value, the same families in the same order for every
    /// model.
    fn families(&self) -> Vec<Family> {
        let gauges = self
            .gauges()
            .map(|(n, h, v)| (n, "gauge", h, v.load(Relaxed) as f64));
        let counters = self
            .counters()
            .map(|(n, h, v)| (n, "counter", h, v.load(Relaxed) as f64));
        let usage = (
            "frugal_kv_cache_usage_ratio",
            "gauge",
            "Fraction of the KV-cache blocks referenced by sequences (cached blocks no sequence holds count as free).",
            self.kv_cache_usage(),
        );
        let mean = (
            "frugal_spec_mean_accepted_tokens",
            "gauge",
            "Speculative decoding: guessed tokens accepted per verification.",
            self.mean_accepted(),
        );
        gauges
            .into_iter()
            .chain([usage])
            .chain(counters)
            .chain([mean])
            .collect()
    }
}

/// A series family and one model's value: (name, type, help, value).
type Family = (&'static str, &'static str, &'static str, f64);

/// The server's own series, not any model's: its connections.
#[derive(Debug, Default)]
pub struct ConnMetrics {
    /// Connections being served.
    pub open: AtomicU64,
    /// Connections over `--max-connections`, answered 503 and closed.
    pub rejected: AtomicU64,
    /// Connections closed by the header, idle or write timeout.
    pub timed_out: AtomicU64,
}

/// One served model as `/metrics` shows it: its name, its engine's series, and what the
/// registry knows of it (loaded or not, loads and unloads).
pub struct ModelSeries<'a> {
    pub name: &'a str,
    pub metrics: &'a Metrics,
    pub lifecycle: Lifecycle,
}

/// A model's loads and unloads, as the registry counts them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lifecycle {
    pub loaded: bool,
    pub loads: u64,
    pub load_failures: u64,
    pub unloads: u64,
    pub load_seconds: f64,
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(name: &str) -> String {
    let v = name
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("model_name=\"{v}\"")
}

/// Every family once (HELP, TYPE), then one series per model (`model_name`, as vLLM labels
/// them); the connection series unlabelled.
pub fn render(conn: &ConnMetrics, models: &[ModelSeries<'_>]) -> String {
    let mut out = String::new();
    let labels: Vec<String> = models.iter().map(|m| label(m.name)).collect();
    let head = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    // Each model's values of the same families, in the same order.
    let values: Vec<Vec<Family>> = models.iter().map(|m| m.metrics.families()).collect();
    if let Some(first) = values.first() {
        for (f, &(name, kind, help, _)) in first.iter().enumerate() {
            head(&mut out, name, kind, help);
            for (v, l) in values.iter().zip(&labels) {
                let _ = writeln!(out, "{name}{{{l}}} {}", v[f].3);
            }
        }
    }
    render_lifecycle(&mut out, models, &labels);
    render_model_server(&mut out, models, &labels);
    let histograms = [
        (
            "frugal_time_to_first_token_seconds",
            "Time from a request's arrival to its first generated token.",
        ),
        (
            "frugal_time_per_output_token_seconds",
            "Time between consecutive generated tokens of a sequence.",
        ),
    ];
    for (k, (name, help)) in histograms.into_iter().enumerate() {
        head(&mut out, name, "histogram", help);
        for (m, l) in models.iter().zip(&labels) {
            let h = if k == 0 {
                &m.metrics.ttft
            } else {
                &m.metrics.tpot
            };
            lock(h).render(&mut out, name, l);
        }
    }
    let disks: Vec<(String, frugal_diskcache::Stats)> = models
        .iter()
        .zip(&labels)
        .filter_map(|(m, l)| lock(&m.metrics.disk).map(|d| (l.clone(), d)))
        .collect();
    render_disk(&mut out, &disks);
    render_connections(&mut out, conn);
    out
}

/// The registry's view of each model: loaded or not, loads, failures, unloads, load time.
fn render_lifecycle(out: &mut String, models: &[ModelSeries<'_>], labels: &[String]) {
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        fn(&Lifecycle) -> f64,
    );
    let rows: [Row; 5] = [
        (
            "frugal_model_loaded",
            "gauge",
            "1 while the model is loaded, else 0.",
            |l| f64::from(u8::from(l.loaded)),
        ),
        (
            "frugal_model_loads_total",
            "counter",
            "Times the model was loaded.",
            |l| l.loads as f64,
        ),
        (
            "frugal_model_load_failures_total",
            "counter",
            "Loads of the model that failed.",
            |l| l.load_failures as f64,
        ),
        (
            "frugal_model_unloads_total",
            "counter",
            "Times the model was unloaded to make room for another.",
            |l| l.unloads as f64,
        ),
        (
            "frugal_model_load_seconds_total",
            "counter",
            "Time spent loading the model.",
            |l| l.load_seconds,
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (m, l) in models.iter().zip(labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", value(&m.lifecycle));
        }
    }
}

/// The gauges of the model-server protocol that Kubernetes' Gateway API Inference Extension
/// scrapes, under vLLM's names, HELP texts and types, for loaded models only: vLLM exports
/// nothing for a model it does not serve, and a model without an engine has no queue to report.
/// `vllm:cache_config_info` carries `model_name` too (vLLM's has only the cache settings and
/// `engine`: it serves one model).
fn render_model_server(out: &mut String, models: &[ModelSeries<'_>], labels: &[String]) {
    type Row = (&'static str, &'static str, fn(&Metrics) -> f64);
    let rows: [Row; 3] = [
        (
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            |m| m.running.load(Relaxed) as f64,
        ),
        (
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            |m| m.waiting.load(Relaxed) as f64,
        ),
        (
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            Metrics::kv_cache_usage,
        ),
    ];
    let loaded: Vec<(&ModelSeries<'_>, &String)> = models
        .iter()
        .zip(labels)
        .filter(|(m, _)| m.lifecycle.loaded)
        .collect();
    for (name, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (m, l) in &loaded {
            let _ = writeln!(out, "{name}{{{l}}} {}", value(m.metrics));
        }
    }
    let name = "vllm:cache_config_info";
    let _ = writeln!(
        out,
        "# HELP {name} Information of the LLMEngine CacheConfig\n# TYPE {name} gauge"
    );
    for (m, l) in &loaded {
        let block_size = m.metrics.kv_block_size.load(Relaxed);
        let blocks = m.metrics.kv_blocks_total.load(Relaxed);
        let _ = writeln!(
            out,
            "{name}{{{l},block_size=\"{block_size}\",num_gpu_blocks=\"{blocks}\",enable_prefix_caching=\"True\"}} 1"
        );
    }
}

/// The KV-cache event publisher's counters (`--kv-events-endpoint`), every model's batches.
pub fn render_kv_events(out: &mut String, sent: u64, dropped: u64) {
    let rows = [
        (
            "frugal_kv_events_batches_total",
            "KV-cache event batches published.",
            sent,
        ),
        (
            "frugal_kv_events_dropped_total",
            "KV-cache event batches dropped because the publisher fell behind.",
            dropped,
        ),
    ];
    for (name, help, v) in rows {
        scalar(out, name, "counter", help, v);
    }
}

/// One unlabelled series with its HELP and TYPE lines.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

fn render_connections(out: &mut String, c: &ConnMetrics) {
    let rows = [
        (
            "frugal_connections_open",
            "gauge",
            "HTTP connections being served.",
            &c.open,
        ),
        (
            "frugal_connections_rejected_total",
            "counter",
            "Connections over the cap, answered 503 and closed.",
            &c.rejected,
        ),
        (
            "frugal_connections_timed_out_total",
            "counter",
            "Connections closed by the header, idle or write timeout.",
            &c.timed_out,
        ),
    ];
    for (name, kind, help, v) in rows {
        scalar(out, name, kind, help, v.load(Relaxed));
    }
}

/// The disk tier's counters and size, per model that has one.
fn render_disk(out: &mut String, disks: &[(String, frugal_diskcache::Stats)]) {
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        fn(&frugal_diskcache::Stats) -> u64,
    );
    let rows: [Row; 7] = [
        ("files", "gauge", "Block files in the disk tier.", |d| {
            d.files
        }),
        (
            "bytes",
            "gauge",
            "Bytes of block files in the disk tier.",
            |d| d.bytes,
        ),
        (
            "blocks_read_total",
            "counter",
            "Blocks read back from disk.",
            |d| d.blocks_read,
        ),
        (
            "blocks_written_total",
            "counter",
            "Blocks written to disk.",
            |d| d.blocks_written,
        ),
        (
            "blocks_rejected_total",
            "counter",
            "Block files found damaged, truncated or foreign, and removed.",
            |d| d.blocks_rejected,
        ),
        (
            "blocks_dropped_total",
            "counter",
            "Blocks not written: the writer was behind, or a full disk paused it.",
            |d| d.blocks_dropped,
        ),
        (
            "write_errors_total",
            "counter",
            "Failed block writes.",
            |d| d.write_errors,
        ),
    ];
    if disks.is_empty() {
        return;
    }
    for (name, kind, help, value) in rows {
        let name = format!("frugal_disk_cache_{name}");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (l, d) in disks {
            let _ = writeln!(out, "{name}{{{l}}} {}", value(d));
        }
    }
}

/// A poisoned lock only means another thread panicked while observing; the numbers are still
/// usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_ttft(0.02);
        m.observe_ttft(3.0);
        let text = render(
            &ConnMetrics::default(),
            &[ModelSeries {
                name: "m",
                metrics: &m,
                lifecycle: Lifecycle::default(),
            }],
        );
        assert!(text.contains(
            "frugal_time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.025\"} 1"
        ));
        assert!(
            text.contains("frugal_time_to_first_token_seconds_bucket{model_name=\"m\",le=\"5\"} 2")
        );
        assert!(text.contains("frugal_time_to_first_token_seconds_count{model_name=\"m\"} 2"));
    }

    /// A model's series as the registry hands them to `render`.
    fn series<'a>(name: &'a str, metrics: &'a Metrics, loaded: bool) -> ModelSeries<'a> {
        ModelSeries {
            name,
            metrics,
            lifecycle: Lifecycle {
                loaded,
                ..Lifecycle::default()
            },
        }
    }

    #[test]
    fn every_family_once_and_a_series_per_model() {
        let (a, b) = (Metrics::default(), Metrics::default());
        b.generation_tokens.store(7, Relaxed);
        let conn = ConnMetrics::default();
        let text = render(&conn, &[series("a", &a, true), series("b\"x", &b, false)]);
        assert_eq!(
            text.matches("# TYPE frugal_generation_tokens_total ")
                .count(),
            1
        );
        assert!(text.contains("frugal_generation_tokens_total{model_name=\"a\"} 0\n"));
        assert!(text.contains("frugal_generation_tokens_total{model_name=\"b\\\"x\"} 7\n"));
        assert!(text.contains("frugal_model_loaded{model_name=\"a\"} 1\n"));
        assert!(text.contains("frugal_connections_open 0\n"));
        assert_eq!(
            text.matches("# TYPE frugal_time_to_first_token_seconds ")
                .count(),
            1
        );
    }

    #[test]
    fn model_server_gauges_are_vllms_for_loaded_models_only() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.running.store(2, Relaxed);
        a.waiting.store(3, Relaxed);
        a.kv_blocks_used.store(16, Relaxed);
        a.kv_blocks_total.store(64, Relaxed);
        a.kv_block_size.store(16, Relaxed);
        b.waiting.store(9, Relaxed);
        let text = render(
            &ConnMetrics::default(),
            &[series("a", &a, true), series("b", &b, false)],
        );
        for (name, value) in [
            ("vllm:num_requests_running", "2"),
            ("vllm:num_requests_waiting", "3"),
            ("vllm:kv_cache_usage_perc", "0.25"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} gauge\n")), "{name}");
            assert!(text.contains(&format!("{name}{{model_name=\"a\"}} {value}\n")));
            assert!(!text.contains(&format!("{name}{{model_name=\"b\"}}")));
        }
        assert!(text.contains(
            "vllm:cache_config_info{model_name=\"a\",block_size=\"16\",num_gpu_blocks=\"64\",enable_prefix_caching=\"True\"} 1\n"
        ));
        assert!(text.contains("frugal_kv_cache_usage_ratio{model_name=\"a\"} 0.25\n"));
    }
}
