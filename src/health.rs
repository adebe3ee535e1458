//! What each channel is doing, for `/readyz` and the operator: running, reconnecting after a
//! failure, or waiting for the operator (credentials refused). Errors shown here come from
//! servers and our own messages, never from the content of reports, so they hold no personal data.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Starting,
    Running,
    /// Failed; reconnecting with backoff on its own.
    Reconnecting,
    /// Credentials refused: retrying would not help (and may lock the account).
    NeedsOperator,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelHealth {
    pub state: State,
    pub since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set while the channel has had no item for its `quiet_after`: since when it is quiet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quiet_since: Option<String>,
}

/// A sink's state and its outbox, as its forwarder last saw them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkHealth {
    pub state: State,
    pub since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pending: i64,
    pub retrying: i64,
    pub dead: i64,
    /// Age in seconds of the oldest event not yet delivered.
    pub oldest_pending_s: Option<i64>,
}

/// Why the database cannot take writes (disk full, I/O error), as the writer last saw it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoreProblem {
    pub error: String,
    pub since: String,
}

/// Set by the store's writer, read by `/readyz`: `None` while commits succeed.
#[derive(Debug, Clone, Default)]
pub struct StoreStatus(Arc<RwLock<Option<StoreProblem>>>);

impl StoreStatus {
    /// A commit failed for want of space or I/O (`Some`), or one succeeded (`None`).
    pub fn set(&self, error: Option<String>) {
        let mut now = self.0.write().expect("store status lock");
        match (error, now.as_mut()) {
            (None, _) => *now = None,
            (Some(e), Some(p)) => p.error = e,
            (Some(error), None) => {
                *now = Some(StoreProblem {
                    error,
                    since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                })
            }
        }
    }

    pub fn get(&self) -> Option<StoreProblem> {
        self.0.read().expect("store status lock").clone()
    }
}

/// Shared by the channels (writers) and the HTTP server (reader); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health(
    Arc<RwLock<BTreeMap<String, ChannelHealth>>>,
    Arc<RwLock<BTreeMap<String, SinkHealth>>>,
    StoreStatus,
);

impl Health {
    /// Health that also shows the store's writer's state.
    pub fn with_store(store: StoreStatus) -> Self {
        Self(Default::default(), Default::default(), store)
    }

    pub fn store(&self) -> Option<StoreProblem> {
        self.2.get()
    }

    pub fn set(&self, channel: &str, state: State, error: Option<String>) {
        let mut map = self.0.write().expect("health lock");
        // Keep `since` when nothing changed, so it says how long a state has lasted.
        if let Some(h) = map.get_mut(channel)
            && h.state == state
        {
            h.error = error;
            return;
        }
        let quiet_since = map.get(channel).and_then(|h| h.quiet_since.clone());
        map.insert(
            channel.to_string(),
            ChannelHealth {
                state,
                since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                error,
                quiet_since,
            },
        );
    }

    /// Marks a channel quiet (or not); returns whether that changed.
    pub fn set_quiet(&self, channel: &str, quiet: bool) -> bool {
        let mut map = self.0.write().expect("health lock");
        let Some(h) = map.get_mut(channel) else {
            return false;
        };
        if h.quiet_since.is_some() == quiet {
            return false;
        }
        h.quiet_since =
            quiet.then(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        true
    }

    pub fn remove(&self, channel: &str) {
        self.0.write().expect("health lock").remove(channel);
    }

    pub fn snapshot(&self) -> BTreeMap<String, ChannelHealth> {
        self.0.read().expect("health lock").clone()
    }

    /// Records a sink's state; `since` moves only when the state changes.
    pub fn set_sink(&self, sink: &str, state: State, error: Option<String>, counts: OutboxCounts) {
        let mut map = self.1.write().expect("health lock");
        let since = match map.get(sink) {
            Some(h) if h.state == state => h.since.clone(),
            _ => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        map.insert(
            sink.to_string(),
            SinkHealth {
                state,
                since,
                error,
                pending: counts.pending,
                retrying: counts.retrying,
                dead: counts.dead,
                oldest_pending_s: counts.oldest_pending_s,
            },
        );
    }

    pub fn remove_sink(&self, sink: &str) {
        self.1.write().expect("health lock").remove(sink);
    }

    pub fn sinks(&self) -> BTreeMap<String, SinkHealth> {
        self.1.read().expect("health lock").clone()
    }
}

/// A sink's undelivered events by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: i64,
    pub retrying: i64,
    pub dead: i64,
    pub oldest_pending_s: Option<i64>,
}
