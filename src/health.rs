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
}

/// Shared by the channels (writers) and the HTTP server (reader); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<RwLock<BTreeMap<String, ChannelHealth>>>);

impl Health {
    pub fn set(&self, channel: &str, state: State, error: Option<String>) {
        let mut map = self.0.write().expect("health lock");
        // Keep `since` when nothing changed, so it says how long a state has lasted.
        if let Some(h) = map.get_mut(channel)
            && h.state == state
        {
            h.error = error;
            return;
        }
        map.insert(
            channel.to_string(),
            ChannelHealth {
                state,
                since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                error,
            },
        );
    }

    pub fn remove(&self, channel: &str) {
        self.0.write().expect("health lock").remove(channel);
    }

    pub fn snapshot(&self) -> BTreeMap<String, ChannelHealth> {
        self.0.read().expect("health lock").clone()
    }
}
