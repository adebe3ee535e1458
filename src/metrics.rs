//! `/metrics` in the Prometheus text form (OpenMetrics): what came in on each channel, what each
//! sink delivered, and how the single writer keeps up. Labels are bounded (channel, kind, sink,
//! outcome, state): never a person, an address or an id.
//!
//! One registry for the process: every store and forwarder writes to it, the HTTP server renders
//! it. Counters start at zero with each process, as Prometheus expects.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    pub channel: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    pub channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkOutcome {
    pub sink: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkState {
    pub sink: String,
    pub state: String,
}

pub struct Metrics {
    registry: Registry,
    /// Items stored, by what became of them.
    pub items: Family<ItemLabels, Counter>,
    /// Items a channel could not store (the store refused or was closed).
    pub channel_errors: Family<ChannelLabel, Counter>,
    /// Unix time of the last item a channel stored.
    pub last_item: Family<ChannelLabel, Gauge<f64, AtomicU64>>,
    /// Delivery attempts by result: delivered, retry, dead.
    pub deliveries: Family<SinkOutcome, Counter>,
    /// Rounds in which the sink could not be reached (nothing was tried).
    pub unreachable: Family<SinkLabel, Counter>,
    /// Undelivered events by state, as of the forwarder's last round.
    pub outbox: Family<SinkState, Gauge>,
    /// Age of the oldest undelivered event.
    pub oldest_pending: Family<SinkLabel, Gauge>,
    /// From the event's commit to the sink's confirmation.
    pub delivery_latency: Family<SinkLabel, Histogram>,
    /// Submissions waiting for the writer.
    pub writer_queue: Gauge,
    /// One group commit, from its first statement to COMMIT.
    pub commit_seconds: Histogram,
    /// Commands per group commit.
    pub commit_size: Histogram,
}

impl Metrics {
    fn new() -> Self {
        let mut r = Registry::with_prefix("phananh");
        let items = Family::<ItemLabels, Counter>::default();
        r.register(
            "channel_items",
            "Items stored by each channel, by outcome (created, duplicate, follow_up, automated, quarantined, held, received_before)",
            items.clone(),
        );
        let channel_errors = Family::<ChannelLabel, Counter>::default();
        r.register(
            "channel_errors",
            "Items a channel could not store",
            channel_errors.clone(),
        );
        let last_item = Family::<ChannelLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "channel_last_item_timestamp_seconds",
            "Unix time of the last item the channel stored",
            last_item.clone(),
        );
        let deliveries = Family::<SinkOutcome, Counter>::default();
        r.register(
            "sink_deliveries",
            "Delivery attempts by outcome (delivered, retry, dead)",
            deliveries.clone(),
        );
        let unreachable = Family::<SinkLabel, Counter>::default();
        r.register(
            "sink_unreachable_rounds",
            "Rounds in which the sink could not be reached or refused our credentials",
            unreachable.clone(),
        );
        let outbox = Family::<SinkState, Gauge>::default();
        r.register(
            "sink_outbox_events",
            "Undelivered events by state (pending = queued, retrying, dead)",
            outbox.clone(),
        );
        let oldest_pending = Family::<SinkLabel, Gauge>::default();
        r.register(
            "sink_oldest_pending_seconds",
            "Age of the oldest undelivered event",
            oldest_pending.clone(),
        );
        let delivery_latency = Family::<SinkLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0, 3600.0,
            ])
        });
        r.register(
            "sink_delivery_latency_seconds",
            "From the event's commit to the sink's confirmation",
            delivery_latency.clone(),
        );
        let writer_queue = Gauge::default();
        r.register(
            "writer_queue_depth",
            "Submissions waiting for the writer thread",
            writer_queue.clone(),
        );
        let commit_seconds = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        r.register(
            "writer_commit_seconds",
            "Time of one group commit",
            commit_seconds.clone(),
        );
        let commit_size = Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        r.register(
            "writer_commit_size",
            "Commands applied in one group commit",
            commit_size.clone(),
        );
        Self {
            registry: r,
            items,
            channel_errors,
            last_item,
            deliveries,
            unreachable,
            outbox,
            oldest_pending,
            delivery_latency,
            writer_queue,
            commit_seconds,
            commit_size,
        }
    }

    /// The text a Prometheus server scrapes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn item(&self, channel: &str, kind: &str, outcome: &str) {
        self.items
            .get_or_create(&ItemLabels {
                channel: channel.to_string(),
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.last_item
            .get_or_create(&ChannelLabel {
                channel: channel.to_string(),
            })
            .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    }

    /// When the channel last stored an item in this process (epoch ms).
    pub fn last_item_ms(&self, channel: &str) -> Option<i64> {
        let label = ChannelLabel {
            channel: channel.to_string(),
        };
        // Read without creating the series: a channel that stored nothing has none.
        let seconds = self.last_item.get(&label)?.get();
        Some((seconds * 1000.0) as i64)
    }

    pub fn channel_error(&self, channel: &str) {
        self.channel_errors
            .get_or_create(&ChannelLabel {
                channel: channel.to_string(),
            })
            .inc();
    }

    pub fn delivery(&self, sink: &str, outcome: &str) {
        self.deliveries
            .get_or_create(&SinkOutcome {
                sink: sink.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn sink(&self, sink: &str) -> SinkLabel {
        SinkLabel {
            sink: sink.to_string(),
        }
    }

    /// A sink's outbox as its forwarder last counted it.
    pub fn outbox_counts(&self, sink: &str, c: &crate::health::OutboxCounts) {
        for (state, n) in [
            ("pending", c.pending),
            ("retrying", c.retrying),
            ("dead", c.dead),
        ] {
            self.outbox
                .get_or_create(&SinkState {
                    sink: sink.to_string(),
                    state: state.to_string(),
                })
                .set(n);
        }
        self.oldest_pending
            .get_or_create(&self.sink(sink))
            .set(c.oldest_pending_s.unwrap_or(0));
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

pub fn get() -> &'static Metrics {
    &METRICS
}

/// The outcome label of a receipt.
pub fn outcome(r: &crate::store::Receipt) -> &'static str {
    use crate::store::Outcome;
    if r.redelivered {
        return "received_before";
    }
    match r.outcome {
        Outcome::Created { .. } => "created",
        Outcome::Duplicate { .. } => "duplicate",
        Outcome::Quarantined { .. } => "quarantined",
        Outcome::Automated { .. } => "automated",
        Outcome::FollowUp { .. } => "follow_up",
        Outcome::Held { .. } => "held",
    }
}
