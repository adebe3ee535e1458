//! `phananh.toml`: the daemon's own settings.

use super::sink::SinkConfig;
use super::units;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The daemon file as written. Relative paths are resolved against the file's folder by the loader.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where the database, media and spool live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The HTTP server (health now; webhooks later). Loopback by default: TLS is the proxy's job.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The folder holding one `NAME.toml` per channel.
    #[serde(default = "default_channels_dir")]
    pub channels_dir: PathBuf,
    /// Letters before every tracking code (`PA` gives `PA-7K3M-Q2XD`).
    #[serde(default = "default_prefix")]
    pub tracking_prefix: String,
    /// IANA zone; every time in a record carries this zone's offset.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Category given when nothing better is known.
    #[serde(default = "default_category")]
    pub default_category: String,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub dedupe: DedupeConfig,
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Where reports go, by sink name. Defaults to one `spool` sink under the state directory.
    #[serde(default = "default_sinks")]
    pub sinks: BTreeMap<String, SinkConfig>,
    #[serde(default)]
    pub categories: Vec<CategoryConfig>,
    /// `[[categories]]` kept in a file of their own (relative to this file), instead of here.
    pub categories_file: Option<PathBuf>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub place: PlaceConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Submissions waiting for the writer; when full, intake waits (backpressure).
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Most submissions committed in one transaction.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            queue_capacity: default_queue_capacity(),
            batch_max: default_batch_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DedupeConfig {
    /// The same reporter sending the same text within this window is a duplicate.
    #[serde(
        default = "default_same_text_window",
        deserialize_with = "units::duration"
    )]
    pub same_text_window: Duration,
    /// The same photo (equal bytes, or a perceptual hash within `photo_distance` bits) from
    /// another reporter within this window is the same incident: forwarded as `report.duplicate`.
    #[serde(
        default = "default_same_photo_window",
        deserialize_with = "units::duration"
    )]
    pub same_photo_window: Duration,
    /// Bits two photo hashes may differ by and still be the same photo (0 to 8).
    #[serde(default = "default_photo_distance")]
    pub photo_distance: u32,
    /// Reports from different people within this window may be the same incident.
    #[serde(
        default = "default_similar_window",
        deserialize_with = "units::duration"
    )]
    pub similar_window: Duration,
    /// Two positions farther apart than this (metres) are different incidents.
    #[serde(default = "default_similar_distance_m")]
    pub similar_distance_m: f64,
    /// Text score (0 to 1) two reports need when both positions are known and close.
    #[serde(default = "default_similar_score_near")]
    pub similar_score_near: f64,
    /// Text score two reports need when a position is missing: the words must carry the place.
    #[serde(default = "default_similar_score")]
    pub similar_score: f64,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        Self {
            same_text_window: default_same_text_window(),
            same_photo_window: default_same_photo_window(),
            photo_distance: default_photo_distance(),
            similar_window: default_similar_window(),
            similar_distance_m: default_similar_distance_m(),
            similar_score_near: default_similar_score_near(),
            similar_score: default_similar_score(),
        }
    }
}

/// Limits for every mail channel; a channel file may override them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// A message larger than this is quarantined (raw kept) instead of parsed.
    #[serde(default = "default_max_message_size", deserialize_with = "units::size")]
    pub max_message_size: u64,
    /// An attachment larger than this is listed in `omitted_media`, not stored as media.
    #[serde(
        default = "default_max_attachment_size",
        deserialize_with = "units::size"
    )]
    pub max_attachment_size: u64,
    /// At most this many attachments per message are stored; the rest are listed as omitted.
    #[serde(default = "default_max_attachments")]
    pub max_attachments: usize,
    /// The centre's own addresses (inbound mailboxes, acknowledgement senders). Mail from them, or
    /// with a Message-ID at their domains, is our own coming back: never a report.
    #[serde(default, deserialize_with = "lowercase_list")]
    pub own_addresses: Vec<String>,
    /// A permanent bounce of one of our acknowledgements stops acknowledgements to that address
    /// for this long.
    #[serde(
        default = "default_bounce_suppress_for",
        deserialize_with = "units::duration"
    )]
    pub bounce_suppress_for: Duration,
}

fn lowercase_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    Ok(v.into_iter()
        .map(|s| s.trim().to_ascii_lowercase())
        .collect())
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            max_message_size: default_max_message_size(),
            max_attachment_size: default_max_attachment_size(),
            max_attachments: default_max_attachments(),
            own_addresses: Vec::new(),
            bounce_suppress_for: default_bounce_suppress_for(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// After this many failed attempts an event is dead (kept, listed, re-sent by `outbox retry`).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff_base", deserialize_with = "units::duration")]
    pub backoff_base: Duration,
    #[serde(default = "default_backoff_max", deserialize_with = "units::duration")]
    pub backoff_max: Duration,
    /// Events handed to a sink per round.
    #[serde(default = "default_forward_batch")]
    pub batch: usize,
    /// An event still undelivered this long after it was queued is dead at its next failure.
    #[serde(default = "default_max_age", deserialize_with = "units::duration")]
    pub max_age: Duration,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff_base: default_backoff_base(),
            backoff_max: default_backoff_max(),
            batch: default_forward_batch(),
            max_age: default_max_age(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// Stable code sent to consumers (`ha_tang_do_thi`).
    pub code: String,
    /// Name people read (`Hạ tầng đô thị`).
    pub name: String,
    /// The agency this category routes to.
    pub unit: Option<String>,
    /// Phrases that point to this category, with their weight: matched on folded text (case,
    /// diacritics and đ/d ignored), so "o ga" finds "ổ gà".
    #[serde(default)]
    pub keywords: BTreeMap<String, f64>,
    /// Categories of one family may describe one incident (a fallen billboard is urban order to
    /// one citizen, infrastructure to another). Default: the category alone.
    #[serde(default)]
    pub family: Option<String>,
    /// Kinds of problem and the phrases that name them (`pothole = ["ổ gà", "ổ voi"]`): two
    /// reports that each name a problem, and not the same one, are different incidents.
    #[serde(default)]
    pub problems: BTreeMap<String, Vec<String>>,
}

impl CategoryConfig {
    pub fn family(&self) -> &str {
        self.family.as_deref().unwrap_or(&self.code)
    }
}

/// A unit for a category (or any) in a ward (or any): the first route that matches wins, else
/// the category's own unit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub category: Option<String>,
    /// A ward code of the wards file.
    pub ward: Option<String>,
    pub unit: String,
}

/// A file holding `[[categories]]` (and their `[[routes]]`) only (`categories_file`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CategoriesFile {
    pub categories: Vec<CategoryConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `[place]`: the city's geography, in files beside this one.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PlaceConfig {
    /// GeoJSON Polygon/MultiPolygon of the city: a position outside is flagged.
    pub boundary_file: Option<PathBuf>,
    /// The wards gazetteer (`[[wards]]` with names and old names).
    pub wards_file: Option<PathBuf>,
    /// GeoJSON of the wards, `properties.code` naming a ward of `wards_file`.
    pub ward_polygons_file: Option<PathBuf>,
    /// Read from the files above when the configuration is loaded.
    #[serde(skip)]
    pub boundary: crate::pipeline::geo::Area,
    #[serde(skip)]
    pub wards: crate::pipeline::geo::Wards,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/phananh")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8780))
}
fn default_channels_dir() -> PathBuf {
    PathBuf::from("channels")
}
fn default_prefix() -> String {
    "PA".into()
}
fn default_time_zone() -> String {
    "Asia/Ho_Chi_Minh".into()
}
fn default_category() -> String {
    "chua_phan_loai".into()
}
fn default_queue_capacity() -> usize {
    1024
}
fn default_batch_max() -> usize {
    256
}
fn default_same_text_window() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_same_photo_window() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_photo_distance() -> u32 {
    4
}
fn default_similar_window() -> Duration {
    Duration::from_secs(72 * 3600)
}
fn default_similar_distance_m() -> f64 {
    150.0
}
fn default_similar_score_near() -> f64 {
    0.1
}
fn default_similar_score() -> f64 {
    0.3
}
fn default_max_message_size() -> u64 {
    50_000_000
}
fn default_max_attachment_size() -> u64 {
    25_000_000
}
fn default_max_attachments() -> usize {
    50
}
fn default_bounce_suppress_for() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_max_attempts() -> u32 {
    20
}
fn default_backoff_base() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(600)
}
fn default_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_forward_batch() -> usize {
    256
}
fn default_sinks() -> BTreeMap<String, SinkConfig> {
    BTreeMap::from([(
        "spool".to_string(),
        SinkConfig::spool(PathBuf::from("spool")),
    )])
}
