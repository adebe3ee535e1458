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
    /// Any JSON feed, read through the `[json]` mapping.
    Json,
}

/// Where each field sits in a JSON feed: JSON pointers (RFC 6901), `""` for the whole value.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct JsonMapping {
    /// The list of items in a response (`""` when the response is the list).
    pub items: String,
    /// In each item:
    pub id: String,
    pub created: String,
    /// A newer value here makes the item an update of its report.
    pub updated: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub latitude: Option<String>,
    pub longitude: Option<String>,
    pub address: Option<String>,
    pub reporter_name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub app_user_id: Option<String>,
    /// A list of photo URLs, or of objects holding one at `media_url`.
    pub media: Option<String>,
    pub media_url: Option<String>,
    /// Paging, one of: a next-page link in the response; a cursor in the response sent back as
    /// `cursor_param`; page numbers sent as `page_param` until a page comes back empty.
    pub next: Option<String>,
    pub cursor: Option<String>,
    pub cursor_param: Option<String>,
    pub page_param: Option<String>,
    /// Incremental: the newest `created` seen is sent back as this parameter.
    pub since_param: Option<String>,
    /// The feed's category values → our category codes.
    #[serde(default)]
    pub categories: BTreeMap<String, String>,
}

impl JsonMapping {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let pointers: [(&'static str, Option<&String>); 18] = [
            ("items", Some(&self.items)),
            ("id", Some(&self.id)),
            ("created", Some(&self.created)),
            ("updated", self.updated.as_ref()),
            ("title", self.title.as_ref()),
            ("description", self.description.as_ref()),
            ("category", self.category.as_ref()),
            ("latitude", self.latitude.as_ref()),
            ("longitude", self.longitude.as_ref()),
            ("address", self.address.as_ref()),
            ("reporter_name", self.reporter_name.as_ref()),
            ("phone", self.phone.as_ref()),
            ("email", self.email.as_ref()),
            ("app_user_id", self.app_user_id.as_ref()),
            ("media", self.media.as_ref()),
            ("media_url", self.media_url.as_ref()),
            ("next", self.next.as_ref()),
            ("cursor", self.cursor.as_ref()),
        ];
        for (key, p) in pointers {
            if let Some(p) = p
                && !(p.is_empty() || p.starts_with('/'))
            {
                out.push((
                    key,
                    format!("{key} = {p:?} is not a JSON pointer; write \"/{p}\" (RFC 6901: each step starts with '/')"),
                ));
            }
        }
        if self.id.is_empty() || self.created.is_empty() {
            out.push(("id", "id and created must point inside each item".into()));
        }
        if self.cursor.is_some() != self.cursor_param.is_some() {
            out.push((
                "cursor",
                "cursor and cursor_param go together: where the cursor is, and how to send it"
                    .into(),
            ));
        }
        let styles = [
            self.next.is_some(),
            self.cursor.is_some(),
            self.page_param.is_some(),
        ];
        if styles.iter().filter(|s| **s).count() > 1 {
            out.push((
                "next",
                "choose one way of paging: next, cursor + cursor_param, or page_param".into(),
            ));
        }
        if self.title.is_none() && self.description.is_none() {
            out.push(("title", "map title or description (or both)".into()));
        }
        out
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub kind: String,
    /// With no item for this long, the channel shows as quiet (degraded) in health and a WARN
    /// is logged: a mailbox that moved, a webhook no longer subscribed, a feed that stopped.
    #[serde(default, deserialize_with = "super::units::opt_duration")]
    pub quiet_after: Option<std::time::Duration>,
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
    /// `format = "json"`: where the fields are.
    pub json: Option<JsonMapping>,
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
        match (self.format, &self.json) {
            (FeedFormat::Json, None) => out.push((
                "format",
                "format = \"json\" needs a [json] table saying where the fields are".into(),
            )),
            (FeedFormat::Json, Some(m)) => out.extend(m.problems()),
            (FeedFormat::Open311, Some(_)) => out.push((
                "json",
                "[json] is for format = \"json\"; Open311 needs no mapping".into(),
            )),
            (FeedFormat::Open311, None) => {}
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
