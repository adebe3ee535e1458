//! `kind = "feed"`: a portal's or an app's reports, polled over HTTP. `format = "open311"` reads
//! GeoReport v2 `requests.json`.

use super::units;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    Open311,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub kind: String,
    /// Open311: the `requests.json` URL (with `jurisdiction_id` in it when the server needs one).
    pub url: String,
    pub format: FeedFormat,
    #[serde(default = "default_poll", deserialize_with = "units::duration")]
    pub poll_interval: Duration,
    #[serde(default = "default_timeout", deserialize_with = "units::duration")]
    pub timeout: Duration,
    /// A file holding one header line sent with every request (`Authorization: Bearer …`).
    pub auth_header_file: Option<PathBuf>,
    /// Requests per second to the feed's host, at most.
    #[serde(default = "default_rate")]
    pub rate_per_second: u32,
    /// Open311 asks by creation time: each window starts this long before the last one ended,
    /// so a report the server stored late is still seen.
    #[serde(default = "default_overlap", deserialize_with = "units::duration")]
    pub overlap: Duration,
    /// The first poll looks this far back.
    #[serde(default = "default_backlog", deserialize_with = "units::duration")]
    pub backlog: Duration,
    /// Open311 `page_size` (the paging extension); 0 asks without paging.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// A larger response is cut off and retried later; the cursor does not move past it.
    #[serde(default = "default_max_response", deserialize_with = "units::size")]
    pub max_response_size: u64,
    /// Photos are fetched only from these hosts (and subdomains), over HTTPS.
    #[serde(default)]
    pub media_hosts: Vec<String>,
    #[serde(default = "default_max_media", deserialize_with = "units::size")]
    pub max_media_size: u64,
    /// Open311 `service_code` → category code.
    #[serde(default)]
    pub service_codes: BTreeMap<String, String>,
}

impl FeedConfig {
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "https" => {}
            Ok(u)
                if u.scheme() == "http"
                    && u.host_str()
                        .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
                        .is_some_and(|ip| ip.is_loopback()) => {}
            Ok(_) => out.push((
                "url",
                "url must be https:// (plain http only to a loopback test server)".into(),
            )),
            Err(e) => out.push(("url", format!("url {:?} is not a URL: {e}", self.url))),
        }
        if self.poll_interval.is_zero() {
            out.push(("poll_interval", "poll_interval must be more than 0s".into()));
        }
        if self.rate_per_second == 0 {
            out.push((
                "rate_per_second",
                "rate_per_second must be at least 1".into(),
            ));
        }
        if self.page_size > 1000 {
            out.push((
                "page_size",
                "page_size over 1000: Open311 servers cap responses at 1000 records".into(),
            ));
        }
        out
    }
}

fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_rate() -> u32 {
    2
}
fn default_overlap() -> Duration {
    Duration::from_secs(3600)
}
fn default_backlog() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_page_size() -> u32 {
    500
}
fn default_max_response() -> u64 {
    20_000_000
}
fn default_max_media() -> u64 {
    25_000_000
}
