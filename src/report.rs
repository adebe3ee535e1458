//! The one record every channel produces, and the event consumers receive (`phananh.report/1`).
//! docs/report.schema.json is the contract; a test validates real output against it.

use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "phananh.report/1";

/// What happened to a report, as forwarded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum EventType {
    #[serde(rename = "report.created")]
    Created,
    #[serde(rename = "report.updated")]
    Updated,
    #[serde(rename = "report.duplicate")]
    Duplicate,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "report.created",
            EventType::Updated => "report.updated",
            EventType::Duplicate => "report.duplicate",
        }
    }

    /// The suffix of `event_id` (`<report id>.created`).
    pub fn suffix(self) -> &'static str {
        match self {
            EventType::Created => "created",
            EventType::Updated => "updated",
            EventType::Duplicate => "duplicate",
        }
    }
}

/// The forwarded event: a report plus what happened to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub schema: String,
    pub event: EventType,
    /// Idempotency key for consumers: the same event is always sent with the same id.
    pub event_id: String,
    #[serde(flatten)]
    pub report: Report,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub id: String,
    pub tracking_code: String,
    pub channel: ChannelRef,
    pub external_id: String,
    pub received_at: String,
    pub submitted_at: String,
    /// Absent when the sink may not receive personal data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<Reporter>,
    pub title: String,
    pub description: String,
    /// Quoted earlier messages and signatures cut from the description (e-mail).
    pub quoted: Option<String>,
    pub language: String,
    pub category: Category,
    pub unit: Option<String>,
    pub location: Option<Location>,
    /// The ward (phường/xã) of the position, else one named in the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<WardRef>,
    pub media: Vec<Media>,
    /// Attachments not stored (too large, too many); the raw message still holds them.
    pub omitted_media: Vec<OmittedMedia>,
    pub duplicate_of: Option<ReportRef>,
    pub related: Vec<Related>,
    pub follow_up_of: Option<ReportRef>,
    /// In a `report.updated` event: what the follow-up added. The report's own fields already
    /// include it (its media are merged in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Update {
    pub received_at: String,
    pub description: String,
    pub media: Vec<Media>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelRef {
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Reporter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E.164.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facebook_psid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_user_id: Option<String>,
}

impl Reporter {
    /// The identity used to recognise the same person again (`email:an@example.com`).
    pub fn key(&self) -> Option<String> {
        if let Some(e) = &self.email {
            return Some(format!("email:{}", e.to_lowercase()));
        }
        if let Some(p) = &self.facebook_psid {
            return Some(format!("psid:{p}"));
        }
        if let Some(a) = &self.app_user_id {
            return Some(format!("app:{a}"));
        }
        self.phone.as_ref().map(|p| format!("phone:{p}"))
    }

    /// The same reporter with every value masked, for sinks with `contact = "masked"`.
    pub fn masked(&self) -> Reporter {
        use crate::pipeline::phone::{mask_email, mask_phone};
        Reporter {
            name: self.name.as_ref().map(|n| mask_name(n)),
            phone: self.phone.as_deref().map(mask_phone),
            email: self.email.as_deref().map(mask_email),
            facebook_psid: self.facebook_psid.as_ref().map(|_| "***".into()),
            app_user_id: self.app_user_id.as_ref().map(|_| "***".into()),
        }
    }
}

/// "Nguyễn Văn An" → "N. V. A." — enough for an agency to address a letter, not to identify.
fn mask_name(name: &str) -> String {
    name.split_whitespace()
        .filter_map(|w| w.chars().next())
        .map(|c| format!("{c}."))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Report {
    /// Removes the reporter's identity from the free text too (name, address, any phone number),
    /// for sinks with `contact = "masked"` or `"none"`: citizens sign their mails and write their
    /// numbers into the report itself.
    pub fn redact_text(&mut self) {
        let reporter = self.reporter.clone().unwrap_or_default();
        let redact = |text: &str| -> String {
            let mut t = crate::pipeline::phone::redact_phones(text);
            if let Some(e) = reporter.email.as_deref().filter(|e| !e.is_empty()) {
                t = t.replace(e, &crate::pipeline::phone::mask_email(e));
            }
            if let Some(n) = reporter.name.as_deref().filter(|n| n.chars().count() > 2) {
                t = t.replace(n, &mask_name(n));
            }
            t
        };
        self.title = redact(&self.title);
        self.description = redact(&self.description);
        self.quoted = self.quoted.as_deref().map(redact);
        if let Some(u) = &mut self.update {
            u.description = redact(&u.description);
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CategorySource {
    Channel,
    Rules,
    Default,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Category {
    pub code: String,
    pub source: CategorySource,
    pub score: f64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LocationSource {
    Device,
    Exif,
    Text,
    Feed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    pub source: LocationSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy_m: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// When the photo was taken (EXIF), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    /// The position is outside the city's boundary (`[place] boundary_file`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outside_city: bool,
}

impl Location {
    /// A bare position from one source; the optional details unset.
    pub fn new(lat: f64, lon: f64, source: LocationSource) -> Self {
        Self {
            lat,
            lon,
            source,
            accuracy_m: None,
            address: None,
            ward: None,
            taken_at: None,
            outside_city: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WardRef {
    /// The code in the wards file (GSO code for Huế).
    pub code: String,
    pub name: String,
    pub source: WardSource,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WardSource {
    /// The position lies in the ward's polygon.
    Polygon,
    /// The text names the ward (or one of its old names).
    Text,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Media {
    pub sha256: String,
    pub content_type: String,
    pub size: u64,
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phash: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OmittedMedia {
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
    /// `too_large`, `too_many`, `not_allowed` (a link phananh does not fetch) or `unavailable`.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportRef {
    pub id: String,
    pub tracking_code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Related {
    pub tracking_code: String,
    pub reason: String,
    pub score: f64,
}
